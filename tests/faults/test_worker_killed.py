"""SIGKILL a django-q2 worker child while it runs a step, in the middle of 200 runs."""

import os
import signal
import time

import pytest
from django.conf import settings
from django.utils import timezone

from runs import services
from runs.models import Run, RunEvent, StepAttempt, StepRun
from runs.procfs import process_tree
from runs.status import RunStatus, StepStatus
from tests.conftest import ENGINE_ENV
from tests.faults.conftest import (
    assert_events_complete,
    wait_all_terminal,
    worker_pid,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DIAMOND = """
name: kill-diamond
steps:
  - {id: root, kind: noop}
  - id: left
    kind: python
    callable: tests.faults.steps.work
    depends_on: [root]
    retries: {max_attempts: 2, delay: 0.1}
  - id: right
    kind: python
    callable: tests.faults.steps.work
    depends_on: [root]
    retries: {max_attempts: 2, delay: 0.1}
  - {id: join, kind: noop, depends_on: [left, right]}
"""
RUNS = 200
VICTIM = 100  # the run whose `left` step hangs until its worker is killed
LEASE = float(ENGINE_ENV["TRELLIS_LEASE_SECONDS"])


def test_sigkilled_worker_child_mid_batch(clusters, make_workflow):
    make_workflow(DIAMOND)
    cluster = clusters()
    inputs = [{"pause": 0.005} for _ in range(RUNS)]
    inputs[VICTIM] = {"hold_step": "left", "hold": 60}
    run_ids = services.run_bulk_start(workflow="kill-diamond", inputs=inputs)
    victim = wait_until(
        lambda: StepRun.objects.filter(
            run_id=run_ids[VICTIM], step_id="left", status=StepStatus.RUNNING
        ).first(),
        timeout=60,
        message="the victim step running",
    )
    pid = worker_pid(victim)
    assert pid in process_tree(cluster.proc.pid), "the step runs in a child of our cluster"
    os.kill(pid, signal.SIGKILL)
    killed_at = timezone.now()
    unfinished = Run.objects.filter(pk__in=run_ids).exclude(status__in=("succeeded",)).count()
    assert unfinished > 20, "the kill happened mid-batch"

    started = time.monotonic()
    wait_all_terminal(run_ids, timeout=120)
    assert cluster.proc.poll() is None, "the cluster survived the loss of a worker"

    # The killed attempt was reaped within its lease (plus a tick), then retried.
    first, second = StepAttempt.objects.filter(step_run=victim).order_by("number")
    assert (first.status, first.reason) == (StepStatus.FAILED, "worker_lost")
    reaped_after = (first.finished_at - killed_at).total_seconds()
    assert reaped_after <= LEASE + 1.5, f"reaped {reaped_after:.1f}s after the kill"
    assert second.status == StepStatus.SUCCEEDED and second.worker != victim.worker

    statuses = set(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    assert statuses == {RunStatus.SUCCEEDED}
    # No join ran twice; only steps the killed worker held (its batch) ran again.
    joins = StepRun.objects.filter(run_id__in=run_ids, step_id="join")
    assert set(joins.values_list("attempt", flat=True)) == {1}
    assert StepAttempt.objects.filter(step_run__in=joins).count() == RUNS
    started_joins = RunEvent.objects.filter(run_id__in=run_ids, step_id="join", status="running")
    assert started_joins.count() == RUNS
    retried = StepRun.objects.filter(run_id__in=run_ids, attempt__gt=1)
    assert set(retried.values_list("run_id", flat=True)) == {victim.run_id}
    lost = StepAttempt.objects.filter(step_run__in=retried, number=1)
    assert set(lost.values_list("reason", flat=True)) == {"worker_lost"}
    assert_events_complete(run_ids)
    print(
        f"killed worker {pid}; batch done {time.monotonic() - started:.1f}s later "
        f"(lease {LEASE}s, {settings.Q_CLUSTER['workers']} workers)"
    )
