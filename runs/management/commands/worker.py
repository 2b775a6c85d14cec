"""trellis worker: a django-q2 cluster plus the engine's ticker, stopped cleanly by
SIGINT/SIGTERM.

This process watches its cluster. django-q2's sentinel process replaces a worker child
that dies, but nothing replaces the sentinel: killed (the OOM killer, a stray signal),
it leaves its workers and task pusher running unwatched, or nothing running at all,
while the ticker here goes on as if all were well. So this process is the subreaper of
the cluster's processes (they become its children when the sentinel dies): it kills
what a dead sentinel left and starts a new cluster, and the steps the killed workers
held are taken again when their leases expire.
"""

import contextlib
import ctypes
import gc
import logging
import os
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connections

from runs import procfs
from runs.engine import doorbell
from runs.engine import worker as engine_worker
from runs.engine.ticker import tick

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run django-q2 workers and the Trellis ticker (leases, retries, schedules)."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--no-ticker", action="store_true", help="workers only")

    def handle(self, *args, no_ticker=False, **options):
        from django_q.cluster import Cluster
        from django_q.signals import pre_execute

        import runs.tasks  # noqa: F401 -- imported once here, shared by the forked workers
        from config.connections import close_dead_connections

        # Each task first drops a connection the database closed (it restarted) while the
        # worker process sat idle, instead of failing on it.
        pre_execute.connect(close_dead_connections, dispatch_uid="trellis-dead-connections")

        stop = threading.Event()
        stopping = engine_worker.watch_for_stop()  # before the cluster forks its workers

        def on_signal(signum, frame):
            stop.set()
            stopping.value = 1  # workers finish the steps they hold and take no more

        def start_cluster():
            # The forked processes must not share this process's database connection: one
            # closing its copy would close it for the ticker too.
            connections.close_all()
            cluster = Cluster()
            # Cluster() set handlers of its own: ours again at once, so that a signal while
            # the cluster starts stops this process too, not just the new sentinel.
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            # Objects that exist now are never collected, so the collector does not write
            # to (and un-share) the pages the forked processes inherit.
            gc.freeze()
            cluster.start()  # raises if the new sentinel cannot start (broker down): exit
            return cluster

        become_subreaper()
        cluster = start_cluster()
        self.stdout.write(
            f"trellis worker: {settings.Q_CLUSTER['workers']} workers, "
            f"broker {'redis' if settings.REDIS_URL else 'orm'}"
        )
        self.stdout.flush()
        interval = settings.TRELLIS["TICK_SECONDS"]
        while not stop.wait(interval):
            reap_adopted(cluster.sentinel.pid)
            if not cluster.sentinel.is_alive() and not stop.is_set():
                logger.error(
                    "the worker cluster's sentinel died (exit code %s): its processes are "
                    "killed and a new cluster started",
                    cluster.sentinel.exitcode,
                )
                kill_children()
                cluster = start_cluster()
                self.stdout.write("trellis worker: a new cluster started")
                self.stdout.flush()
            if no_ticker:
                continue
            # A connection broken by a database restart is replaced here, not reused.
            close_old_connections()
            try:
                tick()
            except Exception:
                logger.exception("ticker failed")
        stop_cluster(cluster)
        self.stdout.write("trellis worker stopped")


def stop_cluster(cluster) -> None:
    """Cluster.stop: the workers finish the steps they hold, then exit. Its first act sets
    a multiprocessing Event, which waits for each process sleeping on it to wake; a
    sentinel killed while asleep there never does (SIGTERM sent to the whole process
    group, as `pkill` or systemd's default KillMode do: the sentinel does not catch it),
    and the stop would wait forever. So it runs in a thread, given up once the sentinel
    is gone; then whatever the cluster left is killed. The ORM broker's pusher is rung
    meanwhile: it waits on its doorbell, for as long as the poll interval."""
    stopper = threading.Thread(target=cluster.stop, daemon=True)
    stopper.start()
    while stopper.is_alive() and cluster.sentinel.is_alive():
        # A pusher waiting on its doorbell sees the stop now, not at its next poll.
        doorbell.ring(settings.Q_CLUSTER["name"])
        stopper.join(0.2)
    if stopper.is_alive():
        kill_children()


def become_subreaper() -> None:
    """Orphaned descendants (a dead sentinel's workers) become this process's children,
    not init's, so that it can find and kill them. Linux only: elsewhere, and where the
    call fails, a dead sentinel's processes are not found (logged)."""
    try:
        adopted = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        adopted = -1
    if adopted != 0:
        logger.warning("not a subreaper: a dead sentinel's processes would not be found")


PR_SET_CHILD_SUBREAPER = 36


def kill_children(seconds: float = 10.0) -> None:
    """SIGKILL and reap every child of this process (the ticker has none of its own):
    what a dead cluster left behind, until none is left. A killed worker's step command
    (its own session: executors) is adopted in turn, and killed with its process group
    at the next round, so that it cannot run on beside the step's next attempt. So is a
    process a step left running in the background on purpose."""
    deadline = time.monotonic() + seconds
    while (pids := procfs.children_of(os.getpid())) and time.monotonic() < deadline:
        ours = os.getpgrp()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid != ours:  # a step's own group: all of it
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def reap_adopted(sentinel_pid: int) -> None:
    """Reap adopted descendants that have exited (a step's own background process, say),
    leaving the sentinel to multiprocessing, which reaps it itself."""
    if not hasattr(os, "waitid"):  # macOS: no subreaper either
        return
    while True:
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if exited is None or exited.si_pid == sentinel_pid:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(exited.si_pid, 0)
