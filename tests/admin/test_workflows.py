"""Workflow admin: the validating definition editor, versions, start-run, pause and the
schedules page."""

import json

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.models import Run
from runs.status import Trigger
from tests.admin.conftest import (
    CHAIN,
    NEEDS_INPUT,
    logged_in,
    make_staff,
    post_action,
    shown_messages,
)
from workflows.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:workflows_workflow_changelist")
ADD = reverse("admin:workflows_workflow_add")

CYCLE = """
name: chain
steps:
  - {id: extract, kind: noop, depends_on: [load]}
  - {id: load, kind: bogus, depends_on: [extract, nowhere]}
"""

SCHEDULED = """
name: nightly
schedule: {cron: "0 3 * * *", timezone: Europe/Paris}
steps:
  - {id: only, kind: noop}
"""


def change_url(workflow) -> str:
    return reverse("admin:workflows_workflow_change", args=[workflow.pk])


def editor_data(client, url: str, document: str, **fields) -> dict:
    """The change form as a browser would post it, with `document` as the definition."""
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {"document": document}
    if "base_version" in form.initial:
        data["base_version"] = form.initial["base_version"]
    for inline in page.context["inline_admin_formsets"]:
        for field in inline.formset.management_form:
            data[field.html_name] = field.value()
    for name, value in fields.items():
        if value is not False:
            data[name] = value
    return data


def test_add_creates_the_first_version(admin_site, superuser):
    response = admin_site.post(ADD, editor_data(admin_site, ADD, CHAIN), follow=True)
    assert response.status_code == 200
    workflow = Workflow.objects.get(name="chain")
    assert workflow.source == "admin"
    assert workflow.current_version.number == 1
    assert workflow.current_version.created_by == superuser
    assert [s["id"] for s in workflow.steps] == ["extract", "transform", "load"]
    assert "Saved chain as version 1." in shown_messages(response)


def test_add_rejects_an_invalid_definition_and_stores_nothing(admin_site):
    response = admin_site.post(ADD, editor_data(admin_site, ADD, "name: x\nsteps: [\n"))
    assert response.status_code == 200
    assert "not valid YAML or JSON at line" in response.content.decode()
    response = admin_site.post(ADD, editor_data(admin_site, ADD, CYCLE))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["document"]
    assert "steps[1](load).kind: unknown kind 'bogus'; use one of" in errors[0]
    assert "steps[1](load).depends_on: unknown step 'nowhere'" in errors
    assert "steps[1](load).depends_on: unknown step &#x27;nowhere&#x27;" in (
        response.content.decode()
    )
    assert not Workflow.objects.exists()
    assert not WorkflowVersion.objects.exists()


def test_add_refuses_a_name_already_taken(admin_site, chain):
    response = admin_site.post(ADD, editor_data(admin_site, ADD, CHAIN.replace("three", "3")))
    assert response.status_code == 200
    assert (
        "name: a workflow named 'chain' already exists"
        in (response.context["adminform"].form.errors["document"])
    )
    assert chain.versions.count() == 1


def test_edit_rejects_an_invalid_definition_with_every_error_path(admin_site, chain):
    before = dict(chain.definition)
    url = change_url(chain)
    response = admin_site.post(url, editor_data(admin_site, url, CYCLE))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["document"]
    assert "steps[1](load).depends_on: unknown step 'nowhere'" in errors
    assert any(e.startswith("steps[1](load).kind: unknown kind 'bogus'") for e in errors)
    chain.refresh_from_db()
    assert chain.definition == before
    assert chain.versions.count() == 1

    response = admin_site.post(url, editor_data(admin_site, url, CHAIN + "  - {id: extract}\n"))
    assert (
        "steps[3](extract).id: duplicate step id 'extract'"
        in (response.context["adminform"].form.errors["document"])
    )
    assert chain.versions.count() == 1


def test_a_valid_edit_creates_a_new_version(admin_site, superuser, chain):
    url = change_url(chain)
    edited = CHAIN.replace("three steps in a row", "edited in the admin")
    response = admin_site.post(url, editor_data(admin_site, url, edited), follow=True)
    assert response.status_code == 200
    chain.refresh_from_db()
    assert chain.description == "edited in the admin"
    assert chain.source == "admin"
    assert chain.current_version.number == 2
    assert chain.current_version.created_by == superuser
    assert list(chain.versions.values_list("number", flat=True)) == [2, 1]
    assert "Saved chain as version 2." in shown_messages(response)

    # The same document again, even written as JSON, is not a new version.
    as_json = json.dumps(yaml.safe_load(edited))
    response = admin_site.post(url, editor_data(admin_site, url, as_json), follow=True)
    assert "The definition did not change: still version 2." in shown_messages(response)
    assert chain.versions.count() == 2


def test_edit_shows_versions_read_only(admin_site, chain):
    url = change_url(chain)
    admin_site.post(url, editor_data(admin_site, url, CHAIN.replace("three", "3")))
    page = admin_site.get(url)
    html = page.content.decode()
    for version in chain.versions.all():
        assert version.dag_hash in html
    (inline,) = page.context["inline_admin_formsets"]
    assert not inline.has_add_permission and not inline.has_change_permission
    version = chain.versions.get(number=1)
    detail = admin_site.get(reverse("admin:workflows_workflowversion_change", args=[version.pk]))
    assert detail.status_code == 200
    assert "three steps in a row" in detail.content.decode()


def test_edit_refuses_a_rename_and_a_stale_base_version(admin_site, chain):
    url = change_url(chain)
    response = admin_site.post(url, editor_data(admin_site, url, CHAIN.replace("chain", "other")))
    assert "the name cannot change" in response.context["adminform"].form.errors["document"][0]
    assert not Workflow.objects.filter(name="other").exists()

    stale = editor_data(admin_site, url, CHAIN.replace("three", "3"))
    admin_site.post(url, editor_data(admin_site, url, CHAIN.replace("three", "three!")))
    response = admin_site.post(url, stale)
    assert response.status_code == 200
    assert "changed (now version 2)" in str(response.context["adminform"].form.non_field_errors())
    assert chain.versions.count() == 2


def test_warnings_are_shown_after_saving(admin_site, chain):
    url = change_url(chain)
    response = admin_site.post(
        url, editor_data(admin_site, url, CHAIN + "colour: blue\n"), follow=True
    )
    assert "colour: unknown field 'colour' is ignored" in shown_messages(response)


def test_changelist_columns_and_constant_queries(
    admin_site, make_workflow, django_assert_max_num_queries
):
    make_workflow(SCHEDULED)
    chain = make_workflow(CHAIN)
    Run.objects.create(workflow=chain, version=chain.current_version, dag_hash="x", status="failed")

    def render():
        with CaptureQueriesContext(connection) as queries:
            response = admin_site.get(CHANGELIST)
        assert response.status_code == 200
        return response, len(queries)

    response, few = render()
    html = response.content.decode()
    assert "0 3 * * *" in html and "failed" in html
    for index in range(8):
        make_workflow(CHAIN, name=f"chain-{index}")
    with django_assert_max_num_queries(few):
        response, many = render()
    assert many == few
    assert response.context["cl"].result_count == 10
    search = admin_site.get(CHANGELIST, {"q": "nightly"})
    assert search.context["cl"].result_count == 1
    scheduled = admin_site.get(CHANGELIST, {"scheduled": "yes"})
    assert scheduled.context["cl"].result_count == 1


def test_start_run_action_creates_an_admin_run(admin_site, superuser, chain, make_workflow):
    needs_input = make_workflow(NEEDS_INPUT)
    response = post_action(admin_site, CHANGELIST, "start_runs", [chain.pk, needs_input.pk])
    assert response.status_code == 200
    run = Run.objects.get(workflow=chain)
    assert run.trigger == Trigger.ADMIN
    assert run.created_by == superuser
    assert run.input == {}
    texts = shown_messages(response)
    url = reverse("admin:runs_run_change", args=[run.pk])
    assert f'chain: started run <a href="{url}">{run.pk}</a>' in texts
    assert any(
        t.startswith("needs-input: input does not match the schema") and "repo" in t for t in texts
    )
    assert not Run.objects.filter(workflow=needs_input).exists()


def test_start_run_with_input(admin_site, make_workflow):
    workflow = make_workflow(NEEDS_INPUT)
    url = reverse("admin:workflows_workflow_start", args=[workflow.pk])
    page = admin_site.get(url)
    assert page.status_code == 200
    assert "required" in page.content.decode()  # the input schema is shown

    response = admin_site.post(url, {"input": '{"repo": 5}'})
    assert response.status_code == 200
    assert "5 is not of type &#x27;string&#x27;" in response.content.decode()
    response = admin_site.post(url, {"input": "[1, 2]"})
    assert "the input must be a JSON object" in response.content.decode()
    assert not Run.objects.exists()

    response = admin_site.post(url, {"input": '{"repo": "acme/api"}'})
    run = Run.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:runs_run_change", args=[run.pk])
    assert run.input == {"repo": "acme/api"}
    assert run.trigger == Trigger.ADMIN


def test_starting_needs_the_add_run_permission(chain):
    viewer = logged_in(make_staff("viewer", "workflows.view_workflow"))
    page = viewer.get(CHANGELIST)
    assert "start_runs" not in page.content.decode()
    response = post_action(viewer, CHANGELIST, "start_runs", [chain.pk])
    assert response.status_code == 200
    assert viewer.get(reverse("admin:workflows_workflow_start", args=[chain.pk])).status_code == 403
    assert not Run.objects.exists()


def test_a_viewer_sees_the_definition_but_cannot_edit_it(chain):
    viewer = logged_in(make_staff("viewer", "workflows.view_workflow"))
    url = change_url(chain)
    page = viewer.get(url)
    assert page.status_code == 200
    assert "transform" in page.content.decode()
    assert "<textarea" not in page.content.decode()
    assert viewer.post(url, {"document": CHAIN.replace("three", "3")}).status_code == 403
    assert chain.versions.count() == 1


def test_pause_and_unpause(admin_site, make_workflow):
    workflow = make_workflow(SCHEDULED)
    Workflow.objects.filter(pk=workflow.pk).update(next_run_at="2000-01-01T03:00:00Z")
    response = post_action(admin_site, CHANGELIST, "pause", [workflow.pk])
    assert "1 workflow(s) paused" in shown_messages(response)
    workflow.refresh_from_db()
    assert workflow.is_paused
    page = admin_site.get(reverse("admin:workflows_workflow_schedules"))
    assert "paused" in page.content.decode()

    post_action(admin_site, CHANGELIST, "unpause", [workflow.pk])
    workflow.refresh_from_db()
    assert not workflow.is_paused
    assert workflow.next_run_at is None  # no burst of missed ticks on unpause


def test_schedules_page(admin_site, make_workflow, chain):
    make_workflow(SCHEDULED)
    page = admin_site.get(reverse("admin:workflows_workflow_schedules"))
    assert page.status_code == 200
    (row,) = page.context["rows"]
    assert row["workflow"].name == "nightly"
    assert row["timezone"] == "Europe/Paris"
    assert len(row["upcoming"]) == 3
    assert all(when.hour == 3 for when in row["upcoming"])
    assert "0 3 * * *" in page.content.decode()
    assert (
        reverse("admin:workflows_workflow_schedules") in admin_site.get(CHANGELIST).content.decode()
    )
