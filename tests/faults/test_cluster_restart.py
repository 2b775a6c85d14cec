"""Restart the whole worker cluster and the web server mid-run, gracefully and then with
SIGKILL: runs started before, between and after the restarts (by the API and by bulk
start) all finish, and no event is lost."""

import pytest

from runs import services
from runs.models import Run, StepAttempt
from runs.status import RunStatus, StepStatus
from tests.faults.conftest import (
    assert_events_complete,
    held_step,
    successful_attempts,
    unfinished,
    wait_all_terminal,
    wait_progress,
)
from tests.faults.steps import HOLD_ONE
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RETRY = "retries: {max_attempts: 3, delay: 0.1}"
DIAMOND = f"""
name: restart-diamond
steps:
  - {{id: a, kind: python, callable: tests.faults.steps.work, {RETRY}}}
  - {{id: b, kind: python, callable: tests.faults.steps.work, depends_on: [a], {RETRY}}}
  - {{id: c, kind: python, callable: tests.faults.steps.work, depends_on: [a], {RETRY}}}
  - {{id: d, kind: noop, depends_on: [b, c], {RETRY}}}
"""
# Runs by bulk start before the first restart and between the two; runs over HTTP after
# each (re)start of the web server.
BULK, BETWEEN, POSTED = 80, 60, 10
INPUT = {"pause": 0.02}


def post_runs(server, count: int) -> list[str]:
    run_ids = []
    for _ in range(count):
        response = server.call(
            "POST", "/api/v1/runs", json={"workflow": "restart-diamond", "input": INPUT}
        )
        assert response.status_code == 201, response.text
        run_ids.append(response.json()["run_id"])
    return run_ids


def test_cluster_and_web_restarts_lose_nothing(clusters, web, make_workflow, tmp_path):
    make_workflow(DIAMOND)
    cluster, server = clusters(), web.start()
    run_ids = services.run_bulk_start(workflow="restart-diamond", inputs=[INPUT] * BULK)
    run_ids += post_runs(server, POSTED)
    wait_progress(run_ids, 0.2)
    in_flight = {"sigterm": unfinished(run_ids)}
    assert in_flight["sigterm"] > 20, "the graceful stop happened mid-batch"
    cluster.stop()  # SIGTERM: workers finish the steps they hold and take no more
    server.stop()
    assert cluster.proc.returncode == 0
    in_flight["stopped"] = unfinished(run_ids)
    assert in_flight["stopped"] > in_flight["sigterm"] // 2, "the stop did not drain the backlog"

    # More runs, started while no cluster runs. The first step the next cluster runs holds
    # until the SIGKILL.
    second = services.run_bulk_start(workflow="restart-diamond", inputs=[INPUT] * BETWEEN)
    claim = tmp_path / "held"
    cluster, server = clusters(**{HOLD_ONE: str(claim)}), server.start()
    second += post_runs(server, POSTED)
    run_ids += second
    held = wait_until(lambda: held_step(claim), timeout=60, message="the held step running")
    wait_progress(second, 0.3)
    in_flight["sigkill"] = unfinished(run_ids)
    assert in_flight["sigkill"] > 20, "the SIGKILL happened mid-batch"
    held.refresh_from_db()
    assert held.status == StepStatus.RUNNING, "a step was running when the cluster died"
    cluster.kill_hard()  # sentinel, workers and ticker at once
    server.kill_hard()
    clusters(), server.start()
    run_ids += post_runs(server, POSTED)

    wait_all_terminal(run_ids, timeout=120)
    runs = Run.objects.filter(pk__in=run_ids)
    assert set(runs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert set(successful_attempts(run_ids).values()) == {1}
    lost = StepAttempt.objects.filter(step_run__run_id__in=run_ids).exclude(status="succeeded")
    assert set(lost.values_list("reason", flat=True)) <= {"worker_lost"}
    # The step the SIGKILL cut off was reaped as lost, then ran again.
    first, again = StepAttempt.objects.filter(step_run=held).order_by("number")
    assert (first.status, first.reason) == (StepStatus.FAILED, "worker_lost")
    assert again.status == StepStatus.SUCCEEDED
    assert_events_complete(run_ids)
    # The restarted server serves the whole event stream of a run.
    events = server.call("GET", f"/api/v1/runs/{run_ids[0]}/events").json()
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == RunStatus.SUCCEEDED
    print(f"unfinished runs at {in_flight}; {lost.count()} attempts lost, all retried")
