"""PostgreSQL restarting under load: the workers and the web server reconnect, every run
finishes and no event is lost."""

import time

import pytest
from django.db import connection

from runs import services
from runs.models import Run, StepAttempt
from runs.status import RunStatus, StepStatus
from tests.faults.conftest import (
    assert_events_complete,
    held_step,
    pg_ctl,
    pg_ready,
    retrying,
    successful_attempts,
    unfinished,
    wait_all_terminal,
    wait_progress,
)
from tests.faults.steps import HOLD_ONE, release
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RETRY = "retries: {max_attempts: 3, delay: 0.2}"
CHAIN = f"""
name: db-restart
steps:
  - {{id: a, kind: python, callable: tests.faults.steps.work, {RETRY}}}
  - {{id: b, kind: shell, command: ["true"], depends_on: [a], {RETRY}}}
  - {{id: c, kind: python, callable: tests.faults.steps.work, depends_on: [b], {RETRY}}}
"""
RUNS, POSTED = 160, 5  # runs by bulk start; runs over HTTP before and after the restart
INPUT = {"pause": 0.01}


@pytest.fixture
def restartable_postgres():
    """The test restarts the local PostgreSQL cluster; it is running again afterwards."""
    if connection.vendor != "postgresql":
        pytest.skip("restarts the PostgreSQL server; SQLite has no server to restart")
    yield
    if not pg_ready():
        pg_ctl("start")
    for _ in range(60):
        if pg_ready():
            break
        time.sleep(0.5)
    connection.close()


def post_runs(server, count: int) -> list[str]:
    run_ids = []
    for _ in range(count):
        response = server.call(
            "POST", "/api/v1/runs", json={"workflow": "db-restart", "input": INPUT}
        )
        assert response.status_code == 201, f"{response.status_code} {response.text}"
        run_ids.append(response.json()["run_id"])
    return run_ids


def test_workers_and_web_reconnect_after_postgres_restart(
    restartable_postgres, clusters, web, make_workflow, tmp_path
):
    make_workflow(CHAIN)
    claim = tmp_path / "held"  # the first step the cluster runs holds across the restart
    cluster, server = clusters(**{HOLD_ONE: str(claim)}), web.start()
    run_ids = services.run_bulk_start(workflow="db-restart", inputs=[INPUT] * RUNS)
    run_ids += post_runs(server, POSTED)  # the web server holds connections from now on
    held = wait_until(lambda: held_step(claim), timeout=60, message="the held step running")
    wait_progress(run_ids, 0.25)
    in_flight = {"restart": unfinished(run_ids)}
    assert in_flight["restart"] > 100, "the restart happened mid-batch"
    held.refresh_from_db()
    assert held.status == StepStatus.RUNNING, "a step was running through the restart"
    pg_ctl("restart")  # fast shutdown: every connection is cut
    connection.close()
    wait_until(pg_ready, timeout=60, message="PostgreSQL accepting connections")
    in_flight["restarted"] = unfinished(run_ids)
    release(str(claim))

    # PostgreSQL is back: no request may fail on a connection cut by the restart.
    run_ids += post_runs(server, POSTED)
    wait_all_terminal(run_ids, timeout=150)
    assert cluster.proc.poll() is None, "the cluster survived the restart"
    statuses = retrying(
        lambda: set(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    )
    assert statuses == {RunStatus.SUCCEEDED}
    assert set(successful_attempts(run_ids).values()) == {1}
    lost = StepAttempt.objects.filter(step_run__run_id__in=run_ids).exclude(status="succeeded")
    assert set(lost.values_list("reason", flat=True)) <= {"worker_lost"}
    assert_events_complete(run_ids)
    held_attempts = list(StepAttempt.objects.filter(step_run=held).values_list("status", "reason"))
    print(
        f"unfinished runs at {in_flight}; {lost.count()} attempts lost to the restart; "
        f"held step attempts {held_attempts}"
    )
