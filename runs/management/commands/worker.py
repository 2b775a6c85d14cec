"""trellis worker: a django-q2 cluster plus the engine's ticker, stopped cleanly by
SIGINT/SIGTERM."""

import gc
import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

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
        cluster = Cluster()
        # Objects that exist now are never collected, so the collector does not write to
        # (and un-share) the pages the forked processes inherit.
        gc.freeze()
        cluster.start()

        def on_signal(signum, frame):
            stop.set()
            stopping.value = 1  # workers finish the steps they hold and take no more

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.stdout.write(
            f"trellis worker: {settings.Q_CLUSTER['workers']} workers, "
            f"broker {'redis' if settings.REDIS_URL else 'orm'}"
        )
        self.stdout.flush()
        interval = settings.TRELLIS["TICK_SECONDS"]
        while not stop.wait(interval):
            if no_ticker:
                continue
            # A connection broken by a database restart is replaced here, not reused.
            close_old_connections()
            try:
                tick()
            except Exception:
                logger.exception("ticker failed")
        cluster.stop()
        self.stdout.write("trellis worker stopped")
