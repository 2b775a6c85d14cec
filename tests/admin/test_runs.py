"""Run admin: read-only lists and pages without N+1 queries, filters and search, and the
cancel and resume actions calling the run services."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.models import Run, RunEvent
from runs.status import RunStatus, StepStatus, Trigger
from tests.admin.conftest import GATED, logged_in, make_staff, post_action, shown_messages, start
from tests.helpers import wait_for_run

CHANGELIST = reverse("admin:runs_run_changelist")


def change_url(run) -> str:
    return reverse("admin:runs_run_change", args=[run.pk])


def count_queries(client, url, params=None):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return response, len(queries)


@pytest.mark.django_db
def test_changelist_renders_in_a_constant_number_of_queries(
    admin_site, chain, make_workflow, clerk, django_assert_max_num_queries
):
    other = make_workflow(GATED)
    start(chain, user=clerk)
    start(other)
    _, few = count_queries(admin_site, CHANGELIST)
    for _ in range(6):
        start(chain, user=clerk)
        start(other, trigger=Trigger.CLI)
    with django_assert_max_num_queries(few):
        response, many = count_queries(admin_site, CHANGELIST)
    assert many == few
    assert len(response.context["cl"].result_list) == 14
    html = response.content.decode()
    assert "gated" in html and "chain" in html and "clerk" in html

    for params in (
        {"status__exact": "running"},
        {"trigger__exact": "cli"},
        {"workflow": str(chain.pk)},
        {"created_at__year": "2020"},
        {"q": "chain"},
    ):
        with django_assert_max_num_queries(few + 2):
            response, _ = count_queries(admin_site, CHANGELIST, params)
    filtered = admin_site.get(CHANGELIST, {"workflow": str(chain.pk), "trigger__exact": "api"})
    assert len(filtered.context["cl"].result_list) == 7
    waiting = admin_site.get(CHANGELIST, {"status__exact": "waiting"})
    assert {r.workflow_id for r in waiting.context["cl"].result_list} == {other.pk}


@pytest.mark.django_db
def test_search_by_run_id_prefix(admin_site, chain):
    runs = [start(chain) for _ in range(3)]
    target = runs[1]
    response = admin_site.get(CHANGELIST, {"q": target.pk[-20:-8]})  # not a prefix
    assert list(response.context["cl"].result_list) == []
    response = admin_site.get(CHANGELIST, {"q": target.pk.upper()})
    assert [r.pk for r in response.context["cl"].result_list] == [target.pk]
    response = admin_site.get(CHANGELIST, {"q": target.pk[:6]})
    assert target.pk in [r.pk for r in response.context["cl"].result_list]


@pytest.mark.django_db
def test_run_page_is_read_only_with_its_steps(admin_site, chain, django_assert_max_num_queries):
    run = start(chain, input={"n": 1})
    with django_assert_max_num_queries(25):
        page = admin_site.get(change_url(run))
    assert page.status_code == 200
    html = page.content.decode()
    for step_id in ("extract", "transform", "load"):
        assert step_id in html
    assert "Cancel run" in html and "Resume" not in html
    assert page.context["has_change_permission"] is False
    assert "&quot;n&quot;: 1" in html
    assert admin_site.get(reverse("admin:runs_run_add")).status_code == 403
    response = admin_site.post(change_url(run), {"status": "succeeded"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    events = admin_site.get(reverse("admin:runs_runevent_changelist"), {"q": run.pk})
    assert len(events.context["cl"].result_list) == RunEvent.objects.filter(run=run).count()


@pytest.mark.django_db
def test_cancel_and_resume_actions_without_a_worker(admin_site, chain):
    running, finished = start(chain), start(chain)
    post_action(admin_site, CHANGELIST, "cancel_runs", [finished.pk])
    response = post_action(admin_site, CHANGELIST, "cancel_runs", [running.pk, finished.pk])
    assert response.status_code == 200
    texts = shown_messages(response)
    assert "1 run(s) cancelled" in texts
    assert f"{finished.pk}: run {finished.pk} is already cancelled" in texts
    running.refresh_from_db()
    assert running.status == RunStatus.CANCELLED
    assert set(running.steps.values_list("status", flat=True)) == {StepStatus.CANCELLED}

    response = post_action(admin_site, CHANGELIST, "resume_runs", [running.pk])
    assert "1 run(s) resumed" in shown_messages(response)
    running.refresh_from_db()
    assert running.status not in (RunStatus.CANCELLED, RunStatus.SUCCEEDED)
    response = post_action(admin_site, CHANGELIST, "resume_runs", [running.pk])
    (text,) = shown_messages(response)
    assert text.startswith(f"{running.pk}: only failed, partially_succeeded or cancelled runs")


@pytest.mark.django_db
def test_cancel_and_resume_buttons(admin_site, chain):
    run = start(chain)
    response = admin_site.post(reverse("admin:runs_run_cancel", args=[run.pk]), follow=True)
    assert "1 run(s) cancelled" in shown_messages(response)
    assert "Resume" in response.content.decode()
    response = admin_site.post(reverse("admin:runs_run_cancel", args=[run.pk]), follow=True)
    assert response.status_code == 200
    assert f"{run.pk}: run {run.pk} is already cancelled" in shown_messages(response)
    assert admin_site.get(reverse("admin:runs_run_resume", args=[run.pk])).status_code == 405
    admin_site.post(reverse("admin:runs_run_resume", args=[run.pk]))
    run.refresh_from_db()
    assert run.status != RunStatus.CANCELLED


@pytest.mark.django_db
def test_cancel_needs_the_cancel_permission(chain):
    viewer = logged_in(make_staff("viewer", "runs.view_run"))
    run = start(chain)
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200
    assert "cancel_runs" not in page.content.decode()
    post_action(viewer, CHANGELIST, "cancel_runs", [run.pk])
    assert viewer.post(reverse("admin:runs_run_cancel", args=[run.pk])).status_code == 403
    assert "Cancel run" not in viewer.get(change_url(run)).content.decode()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_start_cancel_resume_and_approve_through_the_admin(engine, make_workflow, superuser):
    """The whole loop with a real worker: each admin action moves the run as it should."""
    admin_site = logged_in(superuser)
    gated = make_workflow(GATED)
    reviewer = make_staff("reviewer2", "runs.view_steprun", "runs.approve_steprun")
    post_action(
        admin_site, reverse("admin:workflows_workflow_changelist"), "start_runs", [gated.pk]
    )
    run = Run.objects.get(workflow=gated)
    assert run.trigger == Trigger.ADMIN
    wait_for_run(run.pk, statuses={RunStatus.WAITING})

    post_action(admin_site, CHANGELIST, "cancel_runs", [run.pk])
    assert wait_for_run(run.pk).status == RunStatus.CANCELLED
    post_action(admin_site, CHANGELIST, "resume_runs", [run.pk])
    wait_for_run(run.pk, statuses={RunStatus.WAITING})

    step = run.steps.get(step_id="sign-off")
    response = post_action(
        logged_in(reviewer),
        reverse("admin:runs_steprun_changelist"),
        "approve_steps",
        [step.pk],
        comment="ship it",
    )
    assert "1 step(s) approved" in shown_messages(response)
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.steps.get(step_id="publish").status == StepStatus.SUCCEEDED
