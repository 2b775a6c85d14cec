"""django-q2's ORM broker, rung when a task arrives instead of only polled.

django-q2's pusher asks the ORM broker for tasks and, when there are none, sleeps for
its poll interval, so a task waited up to that long (20 ms by default) before a worker
saw it: most of a one-step run's trigger-to-running on SQLite. Here every pusher on the
machine listens on a Unix datagram socket of its own, in a directory beside the database
(`<var>/doorbell/<queue>/<pid>`); a process that enqueues a task sends each of them an
empty datagram once its transaction commits, and a pusher waits on its socket instead of
sleeping. The poll interval stays the upper bound: a pusher on another machine (the ORM
broker on PostgreSQL, several hosts) or one without a socket still sees the task at its
next poll. Ringing costs one `sendto` per listening pusher, and never blocks or fails
the enqueue.
"""

import errno
import logging
import os
import select
import socket
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf

logger = logging.getLogger(__name__)

# AF_UNIX paths are at most 107 bytes on Linux; a longer directory means polling only.
MAX_SOCKET_PATH = 107


def directory() -> Path:
    return Path(settings.VAR_DIR) / "doorbell" / settings.QUEUE_NAME


class Doorbell:
    """The socket a pusher waits on; bound in the process that first waits (the pusher,
    after the cluster forks it)."""

    def __init__(self):
        self.sock: socket.socket | None = None
        self.pid: int | None = None

    def _bound(self) -> socket.socket | None:
        if self.pid == os.getpid():
            return self.sock
        self.pid, self.sock = os.getpid(), None
        path = directory() / str(self.pid)
        if len(str(path)) > MAX_SOCKET_PATH:
            logger.info("doorbell path too long, polling only: %s", path)
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # left by an earlier process with this pid
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError:
            logger.warning("no doorbell at %s, polling only", path, exc_info=True)
            return None
        self.sock = sock
        return sock

    def clear(self) -> None:
        """Forget the rings so far: what they announced is about to be read."""
        sock = self._bound()
        while sock is not None:
            try:
                sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return

    def wait(self, seconds: float) -> None:
        sock = self._bound()
        if sock is None:
            select.select([], [], [], seconds)
        else:
            select.select([sock], [], [], seconds)


_sender: socket.socket | None = None


def ring() -> None:
    """Wake every pusher listening on this machine; a socket nobody holds any more (its
    pusher is gone) is removed."""
    global _sender
    try:
        names = os.listdir(directory())
    except OSError:
        return  # no pusher has listened here yet
    if _sender is None:
        _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sender.setblocking(False)
    for name in names:
        path = directory() / name
        try:
            _sender.sendto(b"", str(path))
        except OSError as exc:  # a full socket is a pusher with rings to read already
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                path.unlink(missing_ok=True)


class RungORM(ORM):
    """The ORM broker, with a pusher that waits on its doorbell instead of sleeping."""

    doorbell = Doorbell()

    def enqueue(self, task):
        pk = super().enqueue(task)
        transaction.on_commit(ring, using=Conf.ORM)
        return pk

    def dequeue(self):
        self.doorbell.clear()
        tasks = self._take()
        if tasks:
            return tasks
        self.doorbell.wait(Conf.POLL)
        return None

    def _take(self) -> list:
        """django-q2's own dequeue, without its sleep: up to BULK due tasks, each locked
        by a compare-and-set on its lock time, since another cluster may take it first."""
        queue = self.get_connection()
        taken = []
        for task in queue.filter(key=self.list_key, lock__lt=timezone.now())[: Conf.BULK]:
            if queue.filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                taken.append((task.pk, task.payload))
        return taken
