"""Markup in logs, outputs, errors, comments and descriptions: the API hands it back as JSON
data (never HTML, never sniffable), and the admin pages escape it."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from runs.models import Approval, Run, RunEvent, StepRun
from runs.status import RunStatus
from tests.api.conftest import add_log, add_output, settle, start
from tests.hostile.conftest import post_json

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = "\"><img src=x onerror=alert(2)>'"
PAYLOAD = f"{SCRIPT} {ATTRIBUTE} </pre></textarea><svg onload=alert(3)>"
RAW_TAGS = ("<script>alert(1)", "<img src=x onerror", "<svg onload", "</textarea><svg")


@pytest.fixture
def marked_up(api, make_workflow):
    """A run whose every text field a user or a step can fill holds markup."""
    response = post_json(
        api,
        "/api/v1/workflows",
        {
            "name": "markup",
            "description": PAYLOAD,
            "params": {"p": PAYLOAD},
            "steps": [
                {"id": "emit", "kind": "noop", "description": PAYLOAD},
                {"id": "gate", "kind": "approval", "depends_on": ["emit"]},
            ],
        },
    )
    assert response.status_code == 201, response.content
    run = start("markup", input={PAYLOAD: PAYLOAD}, params={"p": PAYLOAD})
    run = settle(run, RunStatus.FAILED, failed="gate")
    add_log(run, "emit", f"{PAYLOAD}\n")
    add_log(run, "emit", f"{PAYLOAD}\n", stream="stderr")
    add_output(run, "emit", PAYLOAD, PAYLOAD)
    add_output(run, "emit", "rows", [{"name": PAYLOAD, PAYLOAD: 1}])
    Run.objects.filter(pk=run.pk).update(error=PAYLOAD)
    StepRun.objects.filter(run=run, step_id="gate").update(error=PAYLOAD)
    step = StepRun.objects.get(run=run, step_id="gate")
    reviewer = User.objects.get(username="reviewer")
    Approval.objects.create(step_run=step, user=reviewer, decision="rejected", comment=PAYLOAD)
    RunEvent.objects.create(run=run, seq=99, type="log", step_id="emit", data={"m": PAYLOAD})
    return run


def api_urls(run) -> list[str]:
    return [
        f"/api/v1/runs/{run.pk}",
        f"/api/v1/runs/{run.pk}/steps",
        f"/api/v1/runs/{run.pk}/steps/emit",
        f"/api/v1/runs/{run.pk}/steps/emit/log",
        f"/api/v1/runs/{run.pk}/steps/emit/log?tail=5",
        f"/api/v1/runs/{run.pk}/steps/gate",
        f"/api/v1/runs/{run.pk}/steps/emit/preview",
        f"/api/v1/runs/{run.pk}/steps/emit/profile",
        f"/api/v1/runs/{run.pk}/outputs",
        f"/api/v1/runs/{run.pk}/logs",
        f"/api/v1/runs/{run.pk}/events",
        "/api/v1/runs",
        "/api/v1/workflows",
        "/api/v1/workflows/markup",
        "/api/v1/dashboard",
        "/api/v1/search?q=markup",
    ]


@pytest.mark.parametrize("accept", ["", "text/html", "text/html,application/xhtml+xml,*/*;q=0.8"])
def test_the_api_returns_markup_as_json_data(api, marked_up, accept):
    extra = {"HTTP_ACCEPT": accept} if accept else {}
    for url in api_urls(marked_up):
        response = api.get(url, **extra)
        content_type = response["Content-Type"]
        assert content_type.startswith("application/json"), (url, content_type)
        assert response["X-Content-Type-Options"] == "nosniff", url
        assert response.status_code in (200, 406), (url, response.status_code)


def test_markup_survives_as_data(api, marked_up):
    run = api.get(f"/api/v1/runs/{marked_up.pk}").json()
    assert run["error"] == PAYLOAD and run["input"] == {PAYLOAD: PAYLOAD}
    log = api.get(f"/api/v1/runs/{marked_up.pk}/steps/emit/log").json()
    assert log["stdout"] == f"{PAYLOAD}\n" and log["stderr"] == f"{PAYLOAD}\n"
    outputs = api.get(f"/api/v1/runs/{marked_up.pk}/outputs").json()
    assert {"step_id": "emit", "key": PAYLOAD, "value": PAYLOAD} in outputs
    assert api.get("/api/v1/workflows/markup").json()["description"] == PAYLOAD


def test_error_messages_that_echo_markup_are_json(api, marked_up):
    for response in (
        post_json(api, "/api/v1/runs", {"workflow": SCRIPT}),
        api.get(f"/api/v1/runs/{marked_up.pk}/steps/{SCRIPT}"),
        post_json(api, f"/api/v1/runs/{marked_up.pk}/rerun", {"from_step": SCRIPT}),
        api.get(f"/api/v1/{SCRIPT}"),
    ):
        assert 400 <= response.status_code < 500
        assert response["Content-Type"].startswith("application/json")
        assert response["X-Content-Type-Options"] == "nosniff"


def test_log_exports_are_plain_text_attachments(api, marked_up):
    for query, content_type in (("", "text/plain"), ("?format=jsonl", "application/x-ndjson")):
        response = api.get(
            f"/api/v1/runs/{marked_up.pk}/logs/export{query}", HTTP_ACCEPT="text/html"
        )
        assert response.status_code == 200
        assert response["Content-Type"].startswith(content_type)
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["X-Content-Type-Options"] == "nosniff"


def assert_escaped(response, shown=True):
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    for tag in RAW_TAGS:
        assert tag not in html, tag
    if shown:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_admin_pages_escape_markup(admin_browser, marked_up):
    run = marked_up
    emit = StepRun.objects.get(run=run, step_id="emit")
    gate = StepRun.objects.get(run=run, step_id="gate")
    workflow = run.workflow
    pages = [
        reverse("admin:runs_run_change", args=[run.pk]),
        reverse("admin:runs_steprun_change", args=[emit.pk]),
        reverse("admin:runs_steprun_change", args=[gate.pk]),
        reverse("admin:runs_approval_changelist"),
        reverse("admin:runs_runevent_changelist") + f"?q={run.pk}",
        reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        reverse("admin:workflows_workflowversion_change", args=[workflow.current_version_id]),
    ]
    for page in pages:
        assert_escaped(admin_browser.get(page))
    for page in (
        reverse("admin:runs_run_changelist"),
        reverse("admin:runs_steprun_changelist"),
        reverse("admin:workflows_workflow_changelist"),
    ):
        assert_escaped(admin_browser.get(page), shown=False)
    event = RunEvent.objects.get(run=run, seq=99)
    assert_escaped(admin_browser.get(reverse("admin:runs_runevent_change", args=[event.pk])))


def test_admin_search_terms_are_escaped(admin_browser, marked_up):
    for name in ("runs_run", "runs_steprun", "runs_runevent", "workflows_workflow"):
        response = admin_browser.get(reverse(f"admin:{name}_changelist"), {"q": PAYLOAD})
        assert response.status_code == 200
        html = response.content.decode()
        for tag in RAW_TAGS:
            assert tag not in html, (name, tag)
