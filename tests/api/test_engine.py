"""The API against a real worker: ?wait= returns the finished run, and what a real run
leaves behind (logs, outputs, records) reads back through the API."""

import pytest

from runs.models import Run, StepRun
from runs.status import RunStatus, StepStatus
from tests.helpers import wait_for_run, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REAL = """
name: real
steps:
  - id: say
    kind: shell
    command: ["sh", "-c", "echo hello; echo careful >&2; echo greeting=hi >> $TRELLIS_OUTPUT"]
  - {id: rows, kind: python, callable: examples.etl.fetch, depends_on: [say]}
"""

SLOW = """
name: slow
steps:
  - {id: nap, kind: shell, command: ["sleep", "30"]}
  - {id: after, kind: noop, depends_on: [nap]}
"""


def test_wait_returns_the_finished_run_and_its_results(engine, make_workflow, api):
    make_workflow(REAL)
    response = api.post(
        "/api/v1/runs?wait=30", {"workflow": "real", "input": {"rows": 7}}, format="json"
    )
    assert response.status_code == 200, response.json()
    run = response.json()
    assert run["status"] == "succeeded"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
    assert run["steps"][1]["row_count"] == 7

    log = api.get(f"/api/v1/runs/{run['run_id']}/steps/say/log").json()
    assert log["stdout"] == "hello\n" and log["stderr"] == "careful\n" and log["attempt"] == 1
    lines = api.get(f"/api/v1/runs/{run['run_id']}/logs?step_id=say").json()
    assert {(line["level"], line["message"]) for line in lines} == {
        ("info", "hello"),
        ("error", "careful"),
    }
    outputs = api.get(f"/api/v1/runs/{run['run_id']}/outputs?step_id=say").json()
    assert outputs == [{"step_id": "say", "key": "greeting", "value": "hi"}]
    preview = api.get(f"/api/v1/runs/{run['run_id']}/steps/rows/preview").json()
    assert preview["total"] == 7 and set(preview["columns"]) == {"id", "day", "amount", "region"}
    events = api.get(f"/api/v1/runs/{run['run_id']}/events").json()
    assert events[-1]["type"] == "run.status" and events[-1]["status"] == "succeeded"


def test_cancel_a_running_step(engine, make_workflow, api):
    make_workflow(SLOW)
    run_id = api.post("/api/v1/runs", {"workflow": "slow"}, format="json").json()["run_id"]
    wait_until(
        lambda: StepRun.objects.filter(
            run_id=run_id, step_id="nap", status=StepStatus.RUNNING
        ).exists(),
        message="the step to run",
    )
    response = api.post(f"/api/v1/runs/{run_id}/cancel", {"grace_seconds": 0}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run = wait_for_run(run_id)
    assert run.status == RunStatus.CANCELLED
    steps = dict(StepRun.objects.filter(run=run).values_list("step_id", "status"))
    assert steps == {"nap": StepStatus.CANCELLED, "after": StepStatus.CANCELLED}
    assert api.post(f"/api/v1/runs/{run_id}/cancel", format="json").status_code == 409
    assert Run.objects.get(pk=run_id).status == RunStatus.CANCELLED
