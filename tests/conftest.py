"""Shared fixtures: named users, workflows from YAML, and a real `trellis worker` process
(django-q2 cluster + ticker) running against the test database."""

import collections
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.db import connection

from runs.engine import dispatch, doorbell
from workflows.services import workflow_save

ROOT = Path(__file__).resolve().parent.parent
ENGINE_ENV = {
    "TRELLIS_LEASE_SECONDS": "2",
    "TRELLIS_TICK_SECONDS": "0.1",
    "TRELLIS_REQUEUE_AFTER_SECONDS": "5",
    "TRELLIS_CANCEL_GRACE_SECONDS": "2",
}


def pytest_sessionstart(session):
    """With CI=true the PostgreSQL + Redis pass must really reach both: fail, never skip."""
    if os.environ.get("CI") != "true":
        return
    if os.environ.get("REDIS_URL"):
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=3).close()


def database_url_for_tests() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even killed outright, so no
    worker outlives its test session (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class WorkerProcess:
    """A `trellis worker` subprocess; `kill_step_worker` SIGKILLs the child running a step."""

    started: list["WorkerProcess"] = []  # every one this session, for `no_background_worker`

    def __init__(self, extra_env: dict | None = None):
        self.env = {
            **os.environ,
            **ENGINE_ENV,
            "DATABASE_URL": database_url_for_tests(),
            "TRELLIS_QUEUE_NAME": settings.Q_CLUSTER["name"],
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        if settings.REDIS_URL:  # tasks the rolled-back tests sent there outlive their runs
            dispatch.broker().purge_queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "config.cli", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            preexec_fn=_die_with_parent,
        )
        if self not in WorkerProcess.started:
            WorkerProcess.started.append(self)
        # Keep reading, or the worker blocks once the pipe's buffer is full; the ready
        # line need not be the first (the cluster may log before it).
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.ready = threading.Event()
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + 90
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.output()}")
        return self

    def _drain(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip())
            if line.startswith("trellis worker:"):  # printed once the cluster is up
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill_hard(self) -> None:
        """SIGKILL the whole cluster: sentinel, workers and ticker, no clean-up."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="session", autouse=True)
def flush_survives_a_busy_worker():
    """Between transactional tests the tables are truncated while the session worker may
    still be in a transaction (finishing a step, a tick). On PostgreSQL, TRUNCATE takes its
    table locks one by one, so it can hold one the worker needs while waiting for one the
    worker holds: a deadlock, found only after `deadlock_timeout`, again on every retry
    while the worker is busy. A short `lock_timeout` makes TRUNCATE give way at once
    instead; it is retried until it finds the worker between transactions."""
    if connection.vendor != "postgresql":
        yield
        return
    from django.db import OperationalError, transaction
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(100):
            try:
                with (
                    transaction.atomic(using=self.connection.alias),
                    self.connection.cursor() as cursor,
                ):
                    cursor.execute("SET LOCAL lock_timeout = '100ms'")
                    for sql in sql_list:
                        cursor.execute(sql)
                return
            except OperationalError as exc:
                # 55P03 lock_not_available, 40P01 deadlock_detected
                if getattr(exc.__cause__, "sqlstate", None) not in ("55P03", "40P01"):
                    raise
                if attempt == 99:
                    raise
                time.sleep(0.02)

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker):
    """One worker process for the session, on the test database."""
    process = WorkerProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="session", autouse=True)
def no_doorbells_left(django_db_setup):
    """The pushers' sockets go beside the test database (runs.engine.doorbell); it is
    removed at the end, and so are they."""
    yield
    if not settings.REDIS_URL:
        shutil.rmtree(doorbell.directory(), ignore_errors=True)


@pytest.fixture
def engine(worker, transactional_db):
    """A test that needs the real engine: committed data and a running worker."""
    if worker.proc.poll() is not None:  # a test may have killed it
        worker.start()
    return worker


@pytest.fixture
def no_background_worker():
    """No `trellis worker` of this session runs during the test, so no ticker but the
    test's own hands out steps. `engine` starts the session worker again for a later test."""
    for process in WorkerProcess.started:
        process.stop()


@pytest.fixture
def make_workflow(db):
    def make(text: str, **overrides):
        document = yaml.safe_load(text)
        document.update(overrides)
        workflow, _, _ = workflow_save(document=document, source="test")
        return workflow

    return make


@pytest.fixture
def users(db):
    from django.contrib.auth.models import Permission, User

    approve = Permission.objects.get(codename="approve_steprun")
    made = {}
    for name in ("owner", "teammate", "reviewer", "outsider"):
        made[name] = User.objects.create_user(username=name, password="pw-" + name)
    for name in ("owner", "teammate", "reviewer"):
        made[name].user_permissions.add(approve)
    return made
