"""django-q2's ORM broker, rung when a task arrives instead of only polled.

django-q2's pusher asks the ORM broker for tasks and, when there are none, sleeps for
its poll interval, so a task waited up to that long (20 ms by default) before a worker
saw it: most of a one-step run's trigger-to-running on SQLite. Here every pusher listens
on a Unix datagram socket of its own, in a directory beside the SQLite database (which
every process of the installation shares; `<var>/doorbell` for the ORM broker on
PostgreSQL); a process that enqueues a task sends the pushers of its queue on this host
an empty datagram once its transaction commits, and a pusher waits on its socket instead
of sleeping. The poll interval stays the upper bound: a pusher on another host, or one
without a socket, still sees the task at its next poll. Ringing costs one `sendto` per
listening pusher and never fails or blocks the enqueue.
"""

import errno
import functools
import hashlib
import logging
import os
import secrets
import selectors
import socket
import time
from pathlib import Path

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf

logger = logging.getLogger(__name__)

# AF_UNIX paths are at most 107 bytes on Linux; a longer one means polling only.
MAX_SOCKET_PATH = 107
_warned: set[str] = set()


def directory() -> Path:
    database = connections[Conf.ORM or "default"].settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return Path(f"{database['NAME']}-doorbell")
    return Path(settings.VAR_DIR) / "doorbell"


@functools.cache  # asked at every enqueue
def prefix(queue: str) -> str:
    """The start of the socket names of `queue`'s pushers on this host: the directory may
    be shared (several queues, a network file system), and only this host's can be rung."""
    key = f"{queue}\0{socket.gethostname()}".encode()
    return hashlib.blake2b(key, digest_size=6).hexdigest() + "-"


def warn_once(message: str, *args) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message, *args)


class Doorbell:
    """The socket a pusher waits on, bound in the process that first waits (the pusher,
    after the cluster forks it). Its name ends with random characters, so no later
    process can hold the same path: a path that refuses a ring is a gone pusher's."""

    def __init__(self, queue: str):
        self.queue = queue
        self.sock: socket.socket | None = None
        self.selector: selectors.BaseSelector | None = None
        self.pid: int | None = None

    def _bound(self) -> socket.socket | None:
        if self.pid == os.getpid():
            return self.sock
        self.pid, self.sock = os.getpid(), None
        path = directory() / f"{prefix(self.queue)}{self.pid}-{secrets.token_hex(4)}"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            warn_once("doorbell path over %d bytes, polling only: %s", MAX_SOCKET_PATH, path)
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            warn_once("no doorbell at %s, polling only: %s", path, exc)
            return None
        self.sock, self.selector = sock, selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        return sock

    def clear(self) -> None:
        """Forget the rings so far: what they announced is about to be read."""
        sock = self._bound()
        while sock is not None:
            try:
                sock.recv(64)
            except OSError:  # nothing left (BlockingIOError), or an interrupted read
                return

    def wait(self, seconds: float) -> None:
        if self._bound() is None:
            time.sleep(seconds)  # as django-q2 does
        else:
            self.selector.select(seconds)


_sender: socket.socket | None = None


def ring(queue: str) -> None:
    """Wake `queue`'s pushers on this host; a socket that refuses (its pusher is gone)
    is removed. Never raises: a pusher that is not woken still polls."""
    global _sender
    try:
        folder = directory()
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return  # no pusher has listened here yet
        mine = prefix(queue)
        if _sender is None:
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.setblocking(False)
            _sender = sender
        for name in names:
            if not name.startswith(mine):
                continue
            try:
                _sender.sendto(b"", str(folder / name))
            except BlockingIOError:
                pass  # its pusher has rings to read already
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    (folder / name).unlink(missing_ok=True)
                else:  # not ours to write to, say
                    warn_once("doorbell %s not rung, its pusher will poll: %s", name, exc)
    except Exception as exc:  # noqa: BLE001 - ringing is an optimisation
        warn_once("doorbell not rung, pushers will poll: %s", exc)


class RungORM(ORM):
    """The ORM broker, with a pusher that waits on its doorbell instead of sleeping."""

    def __init__(self, list_key: str = None):
        super().__init__(list_key=list_key)
        self.doorbell = Doorbell(self.list_key)

    def enqueue(self, task):
        pk = super().enqueue(task)
        transaction.on_commit(lambda: ring(self.list_key), using=Conf.ORM)
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
