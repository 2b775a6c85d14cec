"""PostgreSQL restarting under load: the workers reconnect and every run finishes."""

import time

import pytest
from django.db import connection

from runs import services
from runs.models import Run, StepAttempt
from runs.status import RunStatus
from tests.faults.conftest import (
    pg_ctl,
    pg_ready,
    retrying,
    successful_attempts,
    wait_all_terminal,
    wait_progress,
)

pytestmark = pytest.mark.django_db(transaction=True)

RETRY = "retries: {max_attempts: 3, delay: 0.2}"
CHAIN = f"""
name: db-restart
steps:
  - {{id: a, kind: python, callable: tests.faults.steps.work, {RETRY}}}
  - {{id: b, kind: shell, command: ["true"], depends_on: [a], {RETRY}}}
  - {{id: c, kind: python, callable: tests.faults.steps.work, depends_on: [b], {RETRY}}}
"""
RUNS = 200


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


def test_workers_reconnect_after_postgres_restart(restartable_postgres, clusters, make_workflow):
    make_workflow(CHAIN)
    cluster = clusters()
    run_ids = services.run_bulk_start(workflow="db-restart", inputs=[{"pause": 0.01}] * RUNS)
    wait_progress(run_ids, 0.25)
    pg_ctl("restart")  # fast shutdown: every connection is cut
    connection.close()

    wait_all_terminal(run_ids, timeout=150)
    assert cluster.proc.poll() is None, "the cluster survived the restart"
    statuses = retrying(
        lambda: set(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    )
    assert statuses == {RunStatus.SUCCEEDED}
    assert set(successful_attempts(run_ids).values()) == {1}
    lost = StepAttempt.objects.filter(step_run__run_id__in=run_ids).exclude(status="succeeded")
    print(
        f"{lost.count()} attempts lost to the restart: {set(lost.values_list('reason', flat=True))}"
    )
