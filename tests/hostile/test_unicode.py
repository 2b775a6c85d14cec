"""Unicode and NUL: emoji, right-to-left text, combining characters, escaped lone surrogates
and NUL characters in inputs, names, step ids, comments, URLs, query strings and headers.
Either stored faithfully and read back the same, or a clear 4xx; never a 500 (PostgreSQL
cannot hold NUL in text or jsonb, nor a lone surrogate anywhere)."""

import json

import pytest

from api.models import ApiToken
from runs.models import Approval, Run
from tests.api.conftest import start
from tests.hostile.conftest import (
    assert_error,
    assert_not_5xx,
    naming,
    nothing_changes,
    post_json,
    send,
)
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

FAITHFUL = {
    "emoji": "\U0001f600\U0001f469\u200d\U0001f4bb\U0001f1fa\U0001f1f8",
    "rtl": "\u05e9\u05dc\u05d5\u05dd \u202eevil\u202c \u0645\u0631\u062d\u0628\u0627",
    "combining": "e\u0301\u0302\u0303\u0304" + "\u0300" * 200,
    "zalgo": "Z\u0351\u034b\u0352a\u0300\u0301l\u0357g\u0353o",
    "zero width": "a\u200b\u200c\u200d\ufeffb",
    "line separators": "a\u2028b\u2029c\r\nd\re",
    "astral": "\U00010348\U0001d11e\U000e0001",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "replacement": "\ufffd",
    "html entities": "&lt;&#0;&#x0;",
    "backslashes": "\\u0000 \\ud800",
    "control characters": "\x01\x07\x1b[31m\x7f",
}

# Escaped in the JSON text itself, since these are not valid Unicode.
REFUSED = {
    "NUL": "\\u0000",
    "NUL in the middle": "a\\u0000b",
    "lone high surrogate": "\\ud800",
    "lone low surrogate": "\\udc00",
    "reversed pair": "\\udc00\\ud800",
}


@pytest.mark.parametrize("name", FAITHFUL)
def test_unusual_text_in_input_is_stored_and_read_back_faithfully(api, free, name):
    text = FAITHFUL[name]
    value = {text: text, "list": [text], "nested": {"k": text}}
    response = post_json(api, "/api/v1/runs", {"workflow": "free", "input": value})
    assert response.status_code == 201, response.content[:500]
    run_id = response.json()["run_id"]
    assert Run.objects.get(pk=run_id).input == value
    detail = api.get(f"/api/v1/runs/{run_id}")
    assert detail.status_code == 200
    assert json.loads(detail.content)["input"] == value
    listed = api.get(f"/api/v1/runs?q={run_id}")
    assert listed.status_code == 200


@pytest.mark.parametrize("name", REFUSED)
def test_nul_and_lone_surrogates_in_input_are_refused(api, free, name):
    escaped = REFUSED[name]
    bodies = [
        ("/api/v1/runs", f'{{"workflow": "free", "input": {{"x": "{escaped}"}}}}'),
        ("/api/v1/runs", f'{{"workflow": "free", "input": {{"{escaped}": 1}}}}'),
        ("/api/v1/runs", f'{{"workflow": "free", "input": {{"a": [1, {{"b": "{escaped}"}}]}}}}'),
        ("/api/v1/runs", f'{{"workflow": "free", "params": {{"x": "{escaped}"}}}}'),
        ("/api/v1/runs", f'{{"workflow": "free", "params": {{"{escaped}": 1}}}}'),
        ("/api/v1/runs", f'{{"workflow": "free", "idempotency_key": "{escaped}"}}'),
        ("/api/v1/runs", f'{{"workflow": "fr{escaped}ee"}}'),
        ("/api/v1/workflows/free/runs", f'{{"input": {{"x": "{escaped}"}}}}'),
        ("/api/v1/workflows/free/runs", f'{{"params": {{"x": "{escaped}"}}}}'),
        ("/api/v1/workflows/free/dry-run", f'{{"input": {{"x": "{escaped}"}}}}'),
        ("/api/v1/workflows/free/dry-run", f'{{"params": {{"x": "{escaped}"}}}}'),
        ("/api/v1/runs/bulk", f'{{"workflow": "free", "inputs": [{{}}, {{"x": "{escaped}"}}]}}'),
        ("/api/v1/runs/bulk-cancel", f'{{"run_ids": ["{escaped}"]}}'),
        ("/api/v1/runs/bulk-cancel", f'{{"filter": {{"workflow": "{escaped}"}}}}'),
        ("/api/v1/runs/bulk-resume", f'{{"filter": {{"q": "{escaped}"}}}}'),
        ("/api/v1/system/purge", f'{{"older_than": "30d{escaped}"}}'),
    ]
    for path, body in bodies:
        with nothing_changes():
            answer = assert_error(post_json(api, path, body), 400)
        assert "\x00" not in answer["error"], answer


@pytest.mark.parametrize("name", REFUSED)
def test_nul_and_lone_surrogates_in_definitions_are_refused(api, free, name):
    escaped = REFUSED[name]
    documents = [
        f'{{"name": "n{escaped}", "steps": [{{"id": "a"}}]}}',
        f'{{"name": "uni", "description": "d{escaped}", "steps": [{{"id": "a"}}]}}',
        f'{{"name": "uni", "steps": [{{"id": "a{escaped}"}}]}}',
        f'{{"name": "uni", "steps": [{{"id": "a", "kind": "shell", "command": "echo {escaped}"}}]}}',
        f'{{"name": "uni", "steps": [{{"id": "a", "kind": "shell", "command": "x", '
        f'"env": {{"A": "{escaped}"}}}}]}}',
        f'{{"name": "uni", "params": {{"{escaped}": 1}}, "steps": [{{"id": "a"}}]}}',
        f'{{"name": "uni", "steps": [{{"id": "a", "{escaped}": 1}}]}}',
    ]
    for document in documents:
        with nothing_changes():
            assert_error(post_json(api, "/api/v1/workflows", document), 400)
            assert_error(send(api, "PUT", "/api/v1/workflows/free", document), 400)
            patch = document.replace('"name": "uni", ', "")
            assert_error(send(api, "PATCH", "/api/v1/workflows/free", patch), 400)
            response = post_json(api, "/api/v1/workflows/validate", document)
            assert response.status_code == 200 and response.json()["valid"] is False


def test_nul_in_yaml_definitions_is_refused(api):
    for document in ('name: "a\\0b"\nsteps: [{id: a}]\n', "name: x\nsteps: [{id: a}]\n#\x00\n"):
        with nothing_changes():
            response = send(api, "POST", "/api/v1/workflows", document, "application/yaml")
            assert_error(response, 400)


def test_unicode_in_workflow_descriptions_and_step_settings_is_kept(api):
    text = "".join(FAITHFUL.values())
    document = {
        "name": "unicode-ok",
        "description": text,
        "steps": [{"id": "a", "kind": "shell", "command": ["echo", text], "env": {"T": text}}],
    }
    response = post_json(api, "/api/v1/workflows", document)
    assert response.status_code == 201, response.content[:500]
    stored = Workflow.objects.get(name="unicode-ok")
    assert stored.description == text and stored.definition == document
    assert api.get("/api/v1/workflows/unicode-ok").json()["description"] == text
    assert api.get("/api/v1/workflows?q=" + FAITHFUL["emoji"]).status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f600",
        "caf\u00e9",
        "\u0430dmin",  # a Cyrillic a, looking like 'admin'
        "a\u200bb",
        "\u05e9\u05dc\u05d5\u05dd",
        "a" * 101,
    ],
)
def test_non_ascii_workflow_names_and_step_ids_are_refused(api, name):
    with nothing_changes():
        answer = assert_error(post_json(api, "/api/v1/workflows", {"name": name, "steps": [{"id": "a"}]}), 400)  # fmt: skip
        assert "name" in json.dumps(answer["details"])
        document = {"name": "ok", "steps": [{"id": name}]}
        answer = assert_error(post_json(api, "/api/v1/workflows", document), 400)
        assert "id" in json.dumps(answer["details"])
        document = {"name": name.upper(), "steps": [{"id": "a"}]}
        assert_error(post_json(api, "/api/v1/workflows", document), 400)


@pytest.mark.parametrize("comment", list(FAITHFUL.values()))
def test_unusual_comments_are_stored_faithfully(api, gated, comment):
    run = start("gated")
    response = post_json(api, f"/api/v1/runs/{run.pk}/steps/sign-off/approve", {"comment": comment})
    if comment != comment.strip() or not comment.strip():
        assert_not_5xx(response)  # leading or trailing blanks may be trimmed
        return
    assert response.status_code == 200, response.content[:500]
    assert Approval.objects.get().comment == comment


@pytest.mark.parametrize("name", REFUSED)
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_nul_and_surrogates_in_comments_are_refused(api, gated, name, decision):
    run = start("gated")
    body = f'{{"comment": "ok {REFUSED[name]}"}}'
    with nothing_changes():
        path = f"/api/v1/runs/{run.pk}/steps/sign-off/{decision}"
        assert_error(post_json(api, path, body), 400)


def test_nul_and_surrogates_in_rerun_steps_are_refused(api, failed_run):
    run = failed_run
    for escaped in REFUSED.values():
        with nothing_changes():
            path = f"/api/v1/runs/{run.pk}/rerun"
            assert_error(post_json(api, path, f'{{"from_step": "transform{escaped}"}}'), 400)


URL_NAMES = [
    "%00",
    "a%00b",
    "%ED%A0%80",  # UTF-8 of a surrogate: invalid UTF-8
    "%FF%FE",
    "%C0%AE%C0%AE",  # overlong '..'
    "%F0%9F%98%80",
    "%E2%80%AE",
    "%0A",
    "%0D%0ASet-Cookie:%20x=y",
    "%20",
    "%25",
    "%2500",
]


@pytest.mark.parametrize("name", URL_NAMES)
def test_odd_characters_in_url_ids_are_404(api, failed_run, name):
    for method, path in naming(failed_run, name):
        with nothing_changes():
            response = getattr(api, method)(path, format="json")
            assert_error(response, (400, 404, 405))
        assert "\r\n" not in "".join(f"{k}: {v}" for k, v in response.items())
    with nothing_changes():
        assert_not_5xx(send(api, "PUT", f"/api/v1/workflows/{name}", {"name": "x", "steps": [{"id": "a"}]}))  # fmt: skip


@pytest.mark.parametrize("value", ["%00", "a%00", "%ED%A0%80", "%FF", "%F0%9F%98%80"])
def test_odd_characters_in_query_strings(api, failed_run, value):
    run = failed_run
    queries = [
        f"/api/v1/runs?workflow={value}",
        f"/api/v1/runs?q={value}",
        f"/api/v1/runs?created_by={value}",
        f"/api/v1/runs?status={value}",
        f"/api/v1/runs?sort={value}",
        f"/api/v1/workflows?q={value}",
        f"/api/v1/workflows/typed/runs?workflow={value}",
        f"/api/v1/approvals?workflow={value}",
        f"/api/v1/search?q={value}",
        f"/api/v1/runs/{run.pk}/logs?step_id={value}",
        f"/api/v1/runs/{run.pk}/logs/export?step_id={value}",
        f"/api/v1/runs/{run.pk}/outputs?step_id={value}",
        f"/api/v1/runs/{run.pk}/steps/transform/preview?key={value}",
        f"/api/v1/runs/{run.pk}/steps/transform/log?stream={value}",
        f"/api/v1/runs/calendar?days={value}",
    ]
    for path in queries:
        with nothing_changes():
            response = api.get(path)
            assert_not_5xx(response)


@pytest.mark.parametrize(
    "header, value",
    [
        ("HTTP_AUTHORIZATION", "Token \x00"),
        ("HTTP_AUTHORIZATION", "Token trl_\x00abc"),
        ("HTTP_AUTHORIZATION", "\x00Token abc"),
        ("HTTP_AUTHORIZATION", "Token \ud800"),
        ("HTTP_AUTHORIZATION", "Token \U0001f600"),
        ("HTTP_AUTHORIZATION", "Bearer \u202e"),
        ("HTTP_USER_AGENT", "\x00\U0001f600\ud800"),
        ("HTTP_X_FORWARDED_FOR", "\x00"),
        ("HTTP_ORIGIN", "\x00"),
        ("HTTP_REFERER", "http://\x00/"),
        ("HTTP_ACCEPT", "application/json\x00"),
        ("HTTP_ACCEPT_LANGUAGE", "\x00"),
        ("HTTP_IDEMPOTENCY_KEY", "\x00"),
        ("HTTP_X_CSRFTOKEN", "\x00"),
        ("HTTP_COOKIE", "sessionid=\x00; csrftoken=\x00"),
    ],
)
def test_nul_and_odd_unicode_in_headers(api, typed, header, value):
    with nothing_changes():
        if header == "HTTP_AUTHORIZATION":
            from rest_framework.test import APIClient

            client = APIClient()
            response = client.get("/api/v1/runs", **{header: value})
            assert_error(response, 401)
            response = client.post("/api/v1/runs", {"workflow": "typed"}, format="json", **{header: value})  # fmt: skip
            assert_error(response, 401)
        else:
            assert_not_5xx(api.get("/api/v1/runs", **{header: value}))
            assert_not_5xx(post_json(api, "/api/v1/workflows/typed/dry-run", {"input": {"n": 1}}, **{header: value}))  # fmt: skip
    assert ApiToken.objects.filter(last_used_at__isnull=False).count() <= 1
