"""Step run admin: approve and reject actions gated by `runs.approve_steprun`, refusals as
messages, and read-only lists and pages for steps, approvals and events."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.models import Approval, LogChunk, StepRun
from runs.status import RunStatus, StepStatus
from tests.admin.conftest import logged_in, post_action, shown_messages, start

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:runs_steprun_changelist")

QUORUM = """
name: quorum
steps:
  - {id: vote, kind: approval, approvals_required: 2}
"""


def gate(run) -> StepRun:
    return StepRun.objects.get(run=run, step_id="sign-off")


def test_approve_with_the_permission(approver, clerk, gated):
    run = start(gated, user=clerk)
    step = gate(run)
    assert step.status == StepStatus.WAITING_APPROVAL
    client = logged_in(approver)
    page = client.get(CHANGELIST, {"status__exact": "waiting_approval"})
    assert [s.pk for s in page.context["cl"].result_list] == [step.pk]
    assert "approve_steps" in page.content.decode()

    response = post_action(client, CHANGELIST, "approve_steps", [step.pk], comment="looks good")
    assert "1 step(s) approved" in shown_messages(response)
    step.refresh_from_db()
    assert step.status == StepStatus.SUCCEEDED
    approval = Approval.objects.get(step_run=step)
    assert (approval.user, approval.decision, approval.comment) == (
        approver,
        "approved",
        "looks good",
    )
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # publish is queued for a worker

    response = post_action(client, CHANGELIST, "approve_steps", [step.pk])
    (text,) = shown_messages(response)
    assert "is not waiting for approval (it is succeeded)" in text


def test_refused_without_the_permission(clerk, gated):
    run = start(gated)
    step = gate(run)
    client = logged_in(clerk)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert "approve_steps" not in html and "reject_steps" not in html
    response = post_action(client, CHANGELIST, "approve_steps", [step.pk])
    assert response.status_code == 200
    assert "1 step(s) approved" not in shown_messages(response)
    step.refresh_from_db()
    assert step.status == StepStatus.WAITING_APPROVAL
    assert not Approval.objects.exists()


def test_self_approval_is_refused_with_a_message(approver, gated):
    run = start(gated, user=approver)
    response = post_action(logged_in(approver), CHANGELIST, "approve_steps", [gate(run).pk])
    (message,) = list(response.context["messages"])
    assert message.level_tag == "error"
    assert "you started this run and this step does not allow self-approval" in str(message)
    assert gate(run).status == StepStatus.WAITING_APPROVAL


def test_reject_fails_the_step_with_the_comment(approver, gated):
    run = start(gated)
    response = post_action(
        logged_in(approver), CHANGELIST, "reject_steps", [gate(run).pk], comment="not today"
    )
    assert "1 step(s) rejected" in shown_messages(response)
    step = gate(run)
    assert step.status == StepStatus.FAILED
    assert step.error == "rejected by approver: not today"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_quorum_keeps_waiting_after_one_approval(approver, superuser, make_workflow):
    run = start(make_workflow(QUORUM))
    step = StepRun.objects.get(run=run)
    response = post_action(logged_in(approver), CHANGELIST, "approve_steps", [step.pk])
    texts = shown_messages(response)
    assert "1 step(s) approved" in texts
    assert f"still waiting for more approvals: {run.pk}/vote" in texts
    post_action(logged_in(superuser), CHANGELIST, "approve_steps", [step.pk])
    step.refresh_from_db()
    assert step.status == StepStatus.SUCCEEDED


def test_lists_render_in_a_constant_number_of_queries(
    admin_site, approver, chain, gated, django_assert_max_num_queries
):
    def render(url):
        with CaptureQueriesContext(connection) as queries:
            response = admin_site.get(url)
        assert response.status_code == 200
        return len(queries)

    runs = [start(gated), start(chain)]
    post_action(logged_in(approver), CHANGELIST, "approve_steps", [gate(runs[0]).pk])
    urls = [
        CHANGELIST,
        reverse("admin:runs_approval_changelist"),
        reverse("admin:runs_runevent_changelist"),
    ]
    few = [render(url) for url in urls]
    for _ in range(5):
        run = start(gated)
        post_action(logged_in(approver), CHANGELIST, "reject_steps", [gate(run).pk])
        start(chain)
    for url, expected in zip(urls, few, strict=True):
        with django_assert_max_num_queries(expected):
            render(url)
    page = admin_site.get(CHANGELIST)
    assert len(page.context["cl"].result_list) == 6 * 2 + 6 * 3
    approvals = admin_site.get(reverse("admin:runs_approval_changelist"))
    assert len(approvals.context["cl"].result_list) == 6


def test_step_page_shows_attempts_decisions_and_log(admin_site, approver, gated):
    run = start(gated)
    step = gate(run)
    post_action(logged_in(approver), CHANGELIST, "approve_steps", [step.pk], comment="fine")
    LogChunk.objects.create(step_run=step, attempt=1, stream="stdout", text="hello from the log\n")
    page = admin_site.get(reverse("admin:runs_steprun_change", args=[step.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "hello from the log" in html
    assert "fine" in html and "approver" in html
    assert admin_site.get(reverse("admin:runs_steprun_add")).status_code == 403
    search = admin_site.get(CHANGELIST, {"q": run.pk[:10]})
    assert step.pk in [s.pk for s in search.context["cl"].result_list]
    search = admin_site.get(CHANGELIST, {"q": "sign-off"})
    assert [s.pk for s in search.context["cl"].result_list] == [step.pk]
