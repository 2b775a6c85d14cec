"""Fault injection: worker clusters started, killed and restarted by the test, alone on the
test database (the session worker of tests/conftest.py is stopped first)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from django.db import connection
from django.db.utils import InterfaceError, OperationalError

from runs.bench import free_port
from runs.engine.dispatch import broker
from runs.models import Run, RunEvent, StepAttempt, StepRun
from runs.status import RUN_TERMINAL
from tests.conftest import ROOT, WorkerProcess

FAULT_ENV = {"TRELLIS_WORKERS": "2", "TRELLIS_MAX_CONCURRENT_RUNS": "100"}


class Cluster(WorkerProcess):
    """A `trellis worker` the fault tests start, kill and restart; its output is kept
    (WorkerProcess drains it) for failure messages."""


@pytest.fixture
def clusters(request, transactional_db):
    """`start(**env)` starts one `trellis worker` (a django-q2 cluster + ticker); all of
    them are killed at the end and the broker queue emptied. On failure, their output."""
    request.getfixturevalue("worker").stop()
    started: list[Cluster] = []

    def start(**env) -> Cluster:
        process = Cluster({**FAULT_ENV, **env}).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill_hard()
    broker().purge_queue()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for number, process in enumerate(started):
            print(f"--- cluster {number} output ---\n{process.output()}")


class WebServer:
    """`trellis serve --no-worker` (uWSGI, as `trellis serve` runs it) on the test
    database, with an API token of scopes read and run."""

    def __init__(self, env: dict, token: str):
        self.env, self.token = env, token
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WebServer":
        argv = ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "config.cli", *argv],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not self._healthy():
            assert self.proc.poll() is None, "the web server exited"
            assert time.monotonic() < deadline, "the web server did not answer in 60 s"
            time.sleep(0.2)
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url("/api/v1/health"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Token {self.token}"}
        return requests.request(method, self.url(path), headers=headers, timeout=30, **kwargs)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def kill_hard(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def web(clusters):
    """A web server (started by the test with .start()), killed at the end."""
    from django.contrib.auth.models import User

    from api.models import ApiToken

    user = User.objects.create_user(username="faults")
    _, key = ApiToken.issue(user=user, scopes=["read", "run"], name="faults")
    server = WebServer(Cluster().env, key)
    yield server
    server.kill_hard()


def held_step(claim) -> StepRun | None:
    """The step a worker holds (tests.faults.steps.HOLD_ONE, `claim` its file), once
    it runs."""
    text = claim.read_text() if claim.exists() else ""
    if " " not in text:
        return None
    run_id, step_id = text.split(" ")
    return StepRun.objects.get(run_id=run_id, step_id=step_id)


def worker_pid(step: StepRun) -> int:
    """The pid in StepRun.worker (`host:pid`)."""
    return int(step.worker.rsplit(":", 1)[1])


def retrying(query, attempts: int = 60):
    """Run a database read, reconnecting while the database restarts."""
    for _ in range(attempts):
        try:
            return query()
        except (OperationalError, InterfaceError):
            connection.close()
            time.sleep(0.5)
    return query()


def wait_all_terminal(run_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = unfinished(run_ids)
        if not left:
            return
        if time.monotonic() > deadline:
            open_runs = Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL)
            sample = [
                (r.pk, r.status, list(r.steps.values_list("step_id", "status")))
                for r in open_runs[:3]
            ]
            raise AssertionError(f"{left} runs not terminal after {timeout}s, e.g. {sample}")
        time.sleep(0.2)


def unfinished(run_ids: list[str]) -> int:
    """How many of the runs are not terminal yet."""
    return retrying(
        lambda: Run.objects.filter(pk__in=run_ids).exclude(status__in=RUN_TERMINAL).count()
    )


def wait_progress(run_ids: list[str], fraction: float, timeout: float = 60.0) -> None:
    """Until `fraction` of the runs are terminal."""
    target = int(len(run_ids) * fraction)
    deadline = time.monotonic() + timeout
    while Run.objects.filter(pk__in=run_ids, status__in=RUN_TERMINAL).count() < target:
        assert time.monotonic() < deadline, f"fewer than {target} runs finished in {timeout}s"
        time.sleep(0.05)


def assert_events_complete(run_ids: list[str]) -> None:
    """Per run: event seq 1..n with no gap, run.event_seq = n, and the last status event
    of the run and of each step agrees with its row."""
    events: dict[str, list[RunEvent]] = {}
    for event in RunEvent.objects.filter(run_id__in=run_ids).order_by("run_id", "seq"):
        events.setdefault(event.run_id, []).append(event)
    steps: dict[str, dict[str, str]] = {}
    for run_id, step_id, status in StepRun.objects.filter(run_id__in=run_ids).values_list(
        "run_id", "step_id", "status"
    ):
        steps.setdefault(run_id, {})[step_id] = status
    for run in Run.objects.filter(pk__in=run_ids):
        seqs = [event.seq for event in events[run.pk]]
        assert seqs == list(range(1, len(seqs) + 1)), f"run {run.pk}: seq gaps {seqs}"
        assert run.event_seq == len(seqs), f"run {run.pk}: event_seq {run.event_seq}"
        last = {}
        for event in events[run.pk]:
            last[event.step_id] = event.status
        assert last.pop("") == run.status, f"run {run.pk}: last run event {last}"
        assert last == steps[run.pk], f"run {run.pk}: step events {last} != {steps[run.pk]}"


def successful_attempts(run_ids: list[str]) -> dict[int, int]:
    """step_run_id -> number of succeeded attempts, for every step of the runs."""
    counts = dict.fromkeys(
        StepRun.objects.filter(run_id__in=run_ids).values_list("pk", flat=True), 0
    )
    for step_run_id in StepAttempt.objects.filter(
        step_run__run_id__in=run_ids, status="succeeded"
    ).values_list("step_run_id", flat=True):
        counts[step_run_id] += 1
    return counts


def pg_cluster() -> tuple[str, str]:
    """(version, name) of the newest local PostgreSQL cluster, e.g. ("15", "main").
    Versions compare as numbers: "16" is newer than "9.6"."""
    versions = [v for v in os.listdir("/etc/postgresql") if v.replace(".", "").isdigit()]
    version = max(versions, key=lambda v: tuple(int(part) for part in v.split(".")))
    return version, "main"


def pg_ctl(action: str) -> None:
    version, name = pg_cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
