"""What steps hand back is hostile input too: outputs and log text a step produces must be
stored (cleaned if need be) or fail the step with a clear error, and always read back
through the API without a 500."""

import pytest

from runs.models import Run
from runs.status import RUN_TERMINAL
from tests.helpers import wait_for_run

WORKFLOW = """
name: emits
steps:
  - {{id: emit, kind: python, callable: tests.hostile.steps.{callable}}}
"""


def run_and_read(make_workflow, client, callable_name: str) -> Run:
    make_workflow(WORKFLOW.format(callable=callable_name))
    from runs import services

    run, _ = services.run_start(workflow="emits")
    run = wait_for_run(run.pk, RUN_TERMINAL, timeout=20)
    for path in ("", "/outputs", "/steps/emit", "/steps/emit/log", "/logs", "/events"):
        response = client.get(f"/api/v1/runs/{run.pk}{path}")
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
    return run


@pytest.mark.timeout(60)
def test_markup_from_a_step_is_stored_as_data(engine, make_workflow, reader):
    run = run_and_read(make_workflow, reader, "emit_markup")
    assert run.status == "succeeded"
    outputs = reader.get(f"/api/v1/runs/{run.pk}/outputs").json()
    assert outputs == [{"step_id": "emit", "key": "html", "value": "<script>alert(1)</script>"}]


@pytest.mark.timeout(60)
def test_non_finite_outputs_fail_the_step_clearly(engine, make_workflow, reader):
    run = run_and_read(make_workflow, reader, "emit_non_finite")
    assert run.status == "failed", run.status
    step = run.steps.get()
    assert step.reason != "worker_lost" and "JSON" in step.error, (step.reason, step.error)


@pytest.mark.timeout(60)
def test_lone_surrogates_from_a_step_are_cleaned(engine, make_workflow, reader):
    run = run_and_read(make_workflow, reader, "emit_surrogate")
    assert run.status == "succeeded", (run.status, run.error)
    outputs = reader.get(f"/api/v1/runs/{run.pk}/outputs").json()
    assert outputs == [{"step_id": "emit", "key": "text", "value": "lone \ufffd surrogate"}]
    log = reader.get(f"/api/v1/runs/{run.pk}/steps/emit/log").json()
    assert log["stdout"] == "lone \ufffd surrogate in the log\n"
