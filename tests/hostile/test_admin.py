"""The admin's forms given hostile text: the definition editor and the start-run form answer
with the form and its errors (never a 500) and store nothing."""

import pytest
from django.urls import reverse

from tests.admin.test_workflows import editor_data
from tests.hostile.conftest import nothing_changes

pytestmark = pytest.mark.django_db

ADD = "admin:workflows_workflow_add"

HOSTILE_DOCUMENTS = {
    "deep YAML": "[" * 100_000,
    "deep JSON": '{"name": "x", "steps": [{"id": "a", "x": ' + "[" * 900 + "]" * 900 + "}]}",
    "date key": "name: dated\nsteps: [{id: a}]\n2024-01-01: x\n",
    "infinite timeout": "name: inf\ntimeout: .inf\nsteps: [{id: a}]\n",
    "escaped NUL": '{"name": "nul", "steps": [{"id": "a", "x": "\\u0000"}]}',
    "escaped surrogate": '{"name": "sur", "steps": [{"id": "a", "x": "\\ud800"}]}',
    "method as a number": "name: meth\nhttp: {method: 5}\nsteps: [{id: a}]\n",
    "kind as a list": "name: kind\nsteps: [{id: a, kind: [1]}]\n",
    "zone directory": "name: tz\nschedule: {cron: '* * * * *', timezone: Europe}\nsteps: [{id: a}]\n",
    "cron that never fires": "name: never\nschedule: '0 0 31 2 *'\nsteps: [{id: a}]\n",
    "remote schema": "name: ref\ninput_schema: {$ref: 'http://127.0.0.1:9/s'}\nsteps: [{id: a}]\n",
    "python object": "!!python/object/apply:os.system [id]\n",
    "binary": "name: bin\nsteps: [{id: a, json: !!binary aGVsbG8=}]\n",
    "path-like name": "name: ../../etc/passwd\nsteps: [{id: a}]\n",
    "markup": "name: '<script>alert(1)</script>'\nsteps: [{id: a}]\n",
}


@pytest.mark.parametrize("name", HOSTILE_DOCUMENTS)
def test_the_definition_editor_refuses_hostile_documents(admin_browser, typed, name):
    url = reverse(ADD)
    data = editor_data(admin_browser, url, HOSTILE_DOCUMENTS[name])
    change = reverse("admin:workflows_workflow_change", args=[typed.pk])
    with nothing_changes():
        response = admin_browser.post(url, data)
        assert response.status_code == 200, response.status_code
        assert response.context["adminform"].form.errors, name
        assert "<script>alert(1)" not in response.content.decode()
        edit = editor_data(admin_browser, change, HOSTILE_DOCUMENTS[name].replace(name, "typed"))
        response = admin_browser.post(change, edit)
        assert response.status_code == 200 and response.context["adminform"].form.errors


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "NaN",
        '{"x": NaN}',
        '{"x": Infinity}',
        '{"x": 1e999}',
        '{"x": "\\u0000"}',
        '{"\\u0000": 1}',
        '{"x": "\\ud800"}',
        '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"x": ' + "[" * 500 + "]" * 500 + "}",
        "[]",
    ],
)
def test_the_start_run_form_refuses_hostile_input(admin_browser, free, text):
    url = reverse("admin:workflows_workflow_start", args=[free.pk])
    with nothing_changes():
        response = admin_browser.post(url, {"input": text})
        assert response.status_code == 200, response.status_code
        assert response.context["form"].errors, text
