"""What steps hand back is hostile input too: outputs and log text a step produces must be
stored (cleaned if need be) or fail the step with a clear error, and always read back
through the API without a 500 (as JSON data) and shown escaped in the admin."""

import pytest
from django.urls import reverse

from runs import services
from runs.models import Run, StepRun
from runs.status import RUN_TERMINAL
from tests.helpers import wait_for_run

WORKFLOW = """
name: emits
steps:
  - {{id: emit, kind: python, callable: tests.hostile.steps.{callable}}}
"""


def run_and_read(make_workflow, client, callable_name: str) -> Run:
    make_workflow(WORKFLOW.format(callable=callable_name))
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


SCRIPT = "<script>alert(1)</script>"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,*/*;q=0.8"  # a link opened in a browser
PRINTS_MARKUP = f"""
name: prints-markup
steps:
  - {{id: shell, kind: shell, command: "echo '{SCRIPT}'; echo '{SCRIPT}' >&2"}}
  - {{id: python, kind: python, callable: tests.hostile.steps.emit_markup}}
"""


@pytest.mark.timeout(60)
def test_markup_a_step_prints_is_json_in_the_api_and_escaped_in_the_admin(
    engine, make_workflow, reader, admin_browser
):
    """What a real step prints goes through the worker's log writer, not a test's rows."""
    make_workflow(PRINTS_MARKUP)
    run, _ = services.run_start(workflow="prints-markup")
    run = wait_for_run(run.pk, RUN_TERMINAL, timeout=30)
    assert run.status == "succeeded", (run.status, run.error)
    for step_id, streams in (("shell", ("stdout", "stderr")), ("python", ("stdout",))):
        url = f"/api/v1/runs/{run.pk}/steps/{step_id}/log"
        response = reader.get(url, HTTP_ACCEPT=BROWSER_ACCEPT)
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
        assert response["X-Content-Type-Options"] == "nosniff"
        log = response.json()
        for stream in streams:
            assert log[stream] == f"{SCRIPT}\n", (step_id, stream, log[stream])
        step = StepRun.objects.get(run=run, step_id=step_id)
        page = admin_browser.get(reverse("admin:runs_steprun_change", args=[step.pk]))
        assert page.status_code == 200
        html = page.content.decode()
        assert "<script>alert(1)" not in html, step_id
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, "the log tail is not shown"
