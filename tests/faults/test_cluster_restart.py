"""Restart the whole worker cluster and the web server mid-run, gracefully and then with
SIGKILL: runs started before, between and after the restarts (by the API and by bulk
start) all finish, and no event is lost."""

import pytest

from runs import services
from runs.models import Run, StepAttempt
from runs.status import RunStatus
from tests.faults.conftest import (
    assert_events_complete,
    successful_attempts,
    wait_all_terminal,
    wait_progress,
)

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
BULK, POSTED = 120, 10  # runs by bulk start; runs started over HTTP after each restart


def post_runs(server, count: int) -> list[str]:
    run_ids = []
    for _ in range(count):
        response = server.call(
            "POST", "/api/v1/runs", json={"workflow": "restart-diamond", "input": {"pause": 0.02}}
        )
        assert response.status_code == 201, response.text
        run_ids.append(response.json()["run_id"])
    return run_ids


def test_cluster_and_web_restarts_lose_nothing(clusters, web, make_workflow):
    make_workflow(DIAMOND)
    cluster, server = clusters(), web.start()
    run_ids = services.run_bulk_start(workflow="restart-diamond", inputs=[{"pause": 0.02}] * BULK)
    run_ids += post_runs(server, POSTED)
    wait_progress(run_ids, 0.2)
    cluster.stop()  # SIGTERM: django-q2 finishes what its workers hold, then exits
    server.stop()
    assert cluster.proc.returncode == 0
    cluster, server = clusters(), server.start()
    run_ids += post_runs(server, POSTED)
    wait_progress(run_ids, 0.6)
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
    assert_events_complete(run_ids)
    # The restarted server serves the whole event stream of a run.
    events = server.call("GET", f"/api/v1/runs/{run_ids[0]}/events").json()
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == RunStatus.SUCCEEDED
    print(f"{lost.count()} attempts lost to the restarts, all retried")
