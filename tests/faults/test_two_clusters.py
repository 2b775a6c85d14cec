"""Two clusters of two workers each racing over 500 fan-out runs on PostgreSQL, every step
also handed to the broker a second time: each step succeeds exactly once."""

import pytest
from django.db import connection

from runs import services
from runs.engine.dispatch import enqueue_steps
from runs.models import Run, RunEvent, StepAttempt, StepRun
from runs.procfs import process_tree
from runs.status import RunStatus, StepStatus
from tests.faults.conftest import (
    assert_events_complete,
    successful_attempts,
    wait_all_terminal,
    wait_progress,
    worker_pid,
)

pytestmark = pytest.mark.django_db(transaction=True)

FANOUT = """
name: race-fanout
steps:
  - {id: root, kind: noop}
  - {id: x, kind: noop, depends_on: [root]}
  - {id: y, kind: noop, depends_on: [root]}
  - {id: z, kind: shell, command: ["true"], depends_on: [root]}
  - {id: join, kind: noop, depends_on: [x, y, z]}
"""
RUNS = 500


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="several clusters on several machines is the PostgreSQL setup; SQLite serialises "
    "every writer, so there is no race to test",
)
def test_two_clusters_each_step_succeeds_once(clusters, make_workflow):
    make_workflow(FANOUT)
    env = {"TRELLIS_MAX_CONCURRENT_RUNS": str(RUNS)}
    first, second = clusters(**env), clusters(**env)
    run_ids = services.run_bulk_start(workflow="race-fanout", inputs=[{}] * RUNS)
    wait_progress(run_ids, 0.05)
    # Deliver every step still queued a second time: the claims must not run it twice.
    queued = StepRun.objects.filter(run_id__in=run_ids, status=StepStatus.QUEUED)
    enqueue_steps(list(queued.values_list("pk", "run_id")))

    wait_all_terminal(run_ids, timeout=150)
    assert set(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True)) == {
        RunStatus.SUCCEEDED
    }
    assert set(successful_attempts(run_ids).values()) == {1}
    assert not StepAttempt.objects.filter(step_run__run_id__in=run_ids).exclude(status="succeeded")
    started = RunEvent.objects.filter(run_id__in=run_ids, type="step.status", status="running")
    assert started.count() == RUNS * 5
    assert_events_complete(run_ids)
    # Both clusters did part of the work.
    pids = {worker_pid(step) for step in StepRun.objects.filter(run_id__in=run_ids)}
    assert pids & set(process_tree(first.proc.pid)) and pids & set(process_tree(second.proc.pid))
