"""Request bodies: malformed, truncated, mistyped, empty, huge and deeply nested JSON on every
endpoint that takes a body. Each is a clear 4xx in the error shape and stores nothing."""

import json

import pytest
from django.conf import settings

from runs.models import Run
from tests.api.conftest import start
from tests.hostile.conftest import (
    assert_error,
    assert_not_5xx,
    nothing_changes,
    post_json,
    send,
)
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

RUN = "__run__"  # replaced by a failed run's id

# Every (method, path) that reads a JSON body.
BODY_ENDPOINTS = [
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/runs/bulk"),
    ("POST", "/api/v1/runs/bulk-cancel"),
    ("POST", "/api/v1/runs/bulk-resume"),
    ("POST", "/api/v1/workflows"),
    ("PUT", "/api/v1/workflows/typed"),
    ("PATCH", "/api/v1/workflows/typed"),
    ("POST", "/api/v1/workflows/typed/runs"),
    ("POST", "/api/v1/workflows/typed/dry-run"),
    ("POST", f"/api/v1/runs/{RUN}/cancel"),
    ("POST", f"/api/v1/runs/{RUN}/resume"),
    ("POST", f"/api/v1/runs/{RUN}/rerun"),
    ("POST", f"/api/v1/runs/{RUN}/steps/transform/approve"),
    ("POST", f"/api/v1/runs/{RUN}/steps/transform/reject"),
    ("POST", "/api/v1/system/purge"),
]
# These answer a body they cannot parse with {"valid": false, "errors": [...]}.
VALIDATE_ENDPOINTS = [
    ("POST", "/api/v1/workflows/validate"),
    ("POST", "/api/v1/workflows/typed/validate"),
]

MALFORMED = {
    "truncated": b'{"workflow": "typed", "input": {"n": 1',
    "truncated string": b'{"workflow": "ty',
    "single quotes": b"{'workflow': 'typed'}",
    "trailing comma": b'{"workflow": "typed",}',
    "trailing garbage": b'{"workflow": "typed"} {"again": 1}',
    "bare word": b"typed",
    "NaN": b'{"workflow": "typed", "input": {"n": NaN}}',
    "Infinity": b'{"workflow": "typed", "input": {"n": -Infinity}}',
    "whitespace only": b"   \n\t ",
    "invalid utf-8": b'{"workflow": "typed\xff\xfe"}',
    "utf-8 BOM": b'\xef\xbb\xbf{"workflow": "typed"}',
    "utf-16": '{"workflow": "typed"}'.encode("utf-16"),
    "control character in string": b'{"workflow": "ty\x01ped"}',
    "raw NUL": b'{"workflow": "typed\x00"}',
    "lone backslash": b'{"workflow": "typed\\"}',
    "bad escape": b'{"workflow": "\\x41"}',
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep arrays, unclosed": b"[" * 100_000,
    "deep objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep in input": b'{"workflow": "typed", "input": {"n": 1, "x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}}",
    "huge exponent": b'{"workflow": "typed", "input": {"n": 1, "x": 1e999}}',
    "huge integer": b'{"workflow": "typed", "input": {"n": 1' + b"0" * 5000 + b"}}",
}


def with_run(path: str, run) -> str:
    return path.replace(RUN, run.pk)


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_json_is_400_and_changes_nothing(api, failed_run, name):
    for method, path in BODY_ENDPOINTS:
        with nothing_changes():
            response = send(api, method, with_run(path, failed_run), MALFORMED[name])
            assert_error(response, 400, "parse_error")


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_json_is_invalid_when_validating(api, typed, name):
    for method, path in VALIDATE_ENDPOINTS:
        with nothing_changes():
            response = send(api, method, path, MALFORMED[name])
        assert response.status_code == 200, (path, response.content[:500])
        answer = response.json()
        assert answer["valid"] is False and answer["errors"][0]["message"]


CONTENT_TYPES = [
    "text/plain",
    "text/html",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "application/json-patch+json",
    "application/octet-stream",
    "image/png",
    "application/jsonx",
    "../../etc/passwd",
    "application/json\u00e9",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_wrong_content_types_are_415(api, failed_run, content_type):
    body = b'{"workflow": "typed", "input": {"n": 1}, "from_step": "transform", "days": 1}'
    for method, path in BODY_ENDPOINTS + VALIDATE_ENDPOINTS:
        with nothing_changes():
            response = send(
                api, method, with_run(path, failed_run), body, content_type=content_type
            )
            assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/api/v1/runs"),
        ("POST", "/api/v1/runs/bulk"),
        ("POST", f"/api/v1/runs/{RUN}/cancel"),
        ("POST", f"/api/v1/runs/{RUN}/resume"),
        ("POST", "/api/v1/workflows/typed/dry-run"),
    ],
)
def test_yaml_is_only_for_definitions(api, failed_run, method, path):
    with nothing_changes():
        response = send(
            api, method, with_run(path, failed_run), "workflow: typed\n", "application/yaml"
        )
        assert_error(response, 415, "unsupported_media_type")


def test_a_body_without_content_type_is_415(api, failed_run):
    """A body the server would otherwise ignore (nothing says what it is) is refused."""
    body = b'{"workflow": "typed", "input": {"n": 1}, "from_step": "transform", "days": 1}'
    for method, path in BODY_ENDPOINTS:
        with nothing_changes():
            response = api.generic(method, with_run(path, failed_run), body, content_type="")
            assert_error(response, 415, "unsupported_media_type")


def test_a_method_not_allowed_is_405_whatever_the_body(api, typed):
    with nothing_changes():
        for body in (MALFORMED["truncated"], b"x=1"):
            for content_type in ("application/json", "text/plain"):
                response = send(api, "PUT", "/api/v1/runs/calendar", body, content_type)
                assert_error(response, 405, "method_not_allowed")
                response = send(api, "PATCH", "/api/v1/runs", body, content_type)
                assert_error(response, 405, "method_not_allowed")


def test_charset_parameters_never_break_parsing(api, typed):
    body = '{"workflow": "typed", "input": {"n": 1}}'
    with nothing_changes():
        for charset in ("bogus", "utf-32", "", "utf-8; x=y", '"utf-8"'):
            response = send(api, "POST", "/api/v1/workflows/typed/dry-run", body.encode(),
                            content_type=f"application/json; charset={charset}")  # fmt: skip
            assert_not_5xx(response)
    response = send(
        api,
        "POST",
        "/api/v1/runs",
        body.encode("latin-1"),
        content_type="application/json; charset=latin-1",
    )
    assert response.status_code == 201


EMPTY_REFUSED = [
    ("POST", "/api/v1/runs", "invalid"),
    ("POST", "/api/v1/runs/bulk", "invalid"),
    ("POST", "/api/v1/runs/bulk-cancel", "invalid"),
    ("POST", "/api/v1/runs/bulk-resume", "invalid"),
    ("POST", "/api/v1/workflows", "invalid_definition"),
    ("PUT", "/api/v1/workflows/typed", "invalid_definition"),
    ("POST", f"/api/v1/runs/{RUN}/rerun", "invalid"),
    ("POST", "/api/v1/system/purge", "invalid"),
]


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b'""', b"0", b"true", b"[{}]"])
def test_empty_and_non_object_bodies(api, failed_run, body):
    for method, path, code in EMPTY_REFUSED:
        with nothing_changes():
            response = send(api, method, with_run(path, failed_run), body)
            assert_error(response, 400, code)


@pytest.mark.parametrize("body", [b"null", b"[]", b'"x"', b"5"])
def test_non_object_bodies_on_endpoints_with_optional_bodies(api, failed_run, gated, body):
    """cancel, approve and dry-run take optional objects; anything else is refused."""
    waiting = start("gated")
    for path in (
        f"/api/v1/runs/{failed_run.pk}/cancel",
        f"/api/v1/runs/{waiting.pk}/steps/sign-off/approve",
        f"/api/v1/runs/{waiting.pk}/steps/sign-off/reject",
        "/api/v1/workflows/typed/dry-run",
        "/api/v1/workflows/typed/runs",
    ):
        with nothing_changes():
            assert_error(send(api, "POST", path, body), 400, "invalid")


# --- size ----------------------------------------------------------------------------------


def test_a_body_over_the_configured_limit_is_413(api, typed):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    head = b'{"workflow": "typed", "input": {"n": 1, "blob": "'
    body = head + b"x" * (limit - len(head) + 1) + b'"}}'
    assert len(body) > limit
    with nothing_changes():
        assert_error(post_json(api, "/api/v1/runs", body), 413, "too_large")
        response = send(api, "POST", "/api/v1/workflows", b"name: big\n#" + body, "text/yaml")
        assert_error(response, 413, "too_large")
        assert_error(post_json(api, "/api/v1/runs/bulk", body), 413, "too_large")


def test_a_declared_length_over_the_limit_is_413_before_reading(api, typed):
    declared = str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE * 4)
    with nothing_changes():
        response = post_json(
            api, "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}}, CONTENT_LENGTH=declared
        )
        assert_error(response, 413, "too_large")


@pytest.mark.parametrize("length", ["-5", "abc", "1e9", "99999999999999999999999999"])
def test_garbage_content_length_never_breaks(api, typed, length):
    with nothing_changes():
        response = post_json(
            api, "/api/v1/workflows/typed/dry-run", {"input": {"n": 1}}, CONTENT_LENGTH=length
        )
        assert_not_5xx(response)


def test_huge_strings_in_bounded_fields_are_400(api, failed_run, gated):
    huge = "x" * 1_000_000
    waiting = start("gated")
    cases = [
        ("/api/v1/runs", {"workflow": huge}),
        ("/api/v1/runs", {"workflow": "typed", "input": {"n": 1}, "idempotency_key": huge}),
        ("/api/v1/runs/bulk", {"workflow": huge, "inputs": [{"n": 1}]}),
        ("/api/v1/runs/bulk-cancel", {"run_ids": [huge]}),
        (f"/api/v1/runs/{failed_run.pk}/rerun", {"from_step": huge}),
        (f"/api/v1/runs/{waiting.pk}/steps/sign-off/approve", {"comment": huge}),
        ("/api/v1/system/purge", {"older_than": huge}),
        ("/api/v1/workflows", {"name": huge, "steps": [{"id": "a"}]}),
        ("/api/v1/workflows", {"name": "big", "steps": [{"id": huge}]}),
    ]
    for path, payload in cases:
        with nothing_changes():
            response = post_json(api, path, payload)
            body = assert_error(response, 400)
        assert len(response.content) < 10_000, (path, "the error echoes the huge value")
        assert body["error"]


def test_huge_strings_where_text_is_free_are_stored_faithfully(api, typed):
    blob = "\u00e9\U0001f600" * 1_000_000  # 2M characters, 6 MB of UTF-8
    response = post_json(api, "/api/v1/runs", {"workflow": "typed", "input": {"n": 1, "b": blob}})
    assert response.status_code == 201, response.content[:500]
    assert Run.objects.get(pk=response.json()["run_id"]).input["b"] == blob
    document = {"name": "described", "description": blob, "steps": [{"id": "a"}]}
    response = post_json(api, "/api/v1/workflows", document)
    assert response.status_code == 201, response.content[:500]
    assert Workflow.objects.get(name="described").description == blob


# --- nesting -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [101, 500, 900, 990, 5_000])
def test_deep_but_parseable_nesting_is_refused_everywhere(api, failed_run, depth):
    """Nesting that the JSON parser still reads must not overflow the stack further on
    (validation, hashing, storing): it is refused with a clear 400."""
    nested = "[" * depth + "]" * depth
    bodies = [
        ("/api/v1/runs", f'{{"workflow": "typed", "input": {{"n": 1, "x": {nested}}}}}'),
        ("/api/v1/runs/bulk", f'{{"workflow": "typed", "inputs": [{{"n": 1, "x": {nested}}}]}}'),
        ("/api/v1/workflows/typed/dry-run", f'{{"input": {{"n": 1, "x": {nested}}}}}'),
        ("/api/v1/workflows/typed/runs", f'{{"params": {{"x": {nested}}}}}'),
        ("/api/v1/runs/bulk-cancel", f'{{"filter": {{"status": {nested}}}}}'),
        ("/api/v1/workflows", f'{{"name": "deep", "steps": [{{"id": "a", "x": {nested}}}]}}'),
    ]
    for path, body in bodies:
        with nothing_changes():
            assert_error(post_json(api, path, body), 400)


def test_nesting_within_the_limit_is_accepted(api, typed):
    nested = {"x": 1}
    for _ in range(45):
        nested = {"x": [nested]}
    response = post_json(api, "/api/v1/runs", {"workflow": "typed", "input": {"n": 1, "d": nested}})
    assert response.status_code == 201, response.content[:500]
    assert Run.objects.get(pk=response.json()["run_id"]).input["d"] == nested


def test_deep_yaml_is_refused(api, typed):
    for document in ("[" * 100_000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 3000))):
        with nothing_changes():
            response = send(api, "POST", "/api/v1/workflows", document, "application/yaml")
            assert_error(response, 400)


def test_yaml_that_is_not_json_is_refused_or_normalised(api):
    cases = {
        "name: dated\nsteps: [{id: a}]\n2024-01-01: x\n": 400,  # a date as a key
        "name: floaty\ntimeout: .inf\nsteps: [{id: a}]\n": 400,
        "name: nanny\ntimeout: .nan\nsteps: [{id: a}]\n": 400,
        "name: keyed\nsteps: [{id: a, env: {1: x}}]\n": 201,  # keys become strings
        "name: binary\nsteps: [{id: a, json: !!binary aGVsbG8=}]\n": 400,
        "name: pythonic\nsteps: [{id: a, json: !!python/object/apply:os.system [id]}]\n": 400,
        "name: set\nsteps: [{id: a, json: !!set {a, b}}]\n": 400,
    }
    for document, status in cases.items():
        response = send(api, "POST", "/api/v1/workflows", document, "application/yaml")
        assert response.status_code == status, (document, response.content[:500])
        if status != 201:
            assert_error(response, 400)
    assert list(Workflow.objects.values_list("name", flat=True)) == ["keyed"]
    assert Workflow.objects.get().definition["steps"][0]["env"] == {"1": "x"}


# --- wrong types ---------------------------------------------------------------------------

WRONG_RUN_FIELDS = {
    "workflow": [None, True, [], {}, ["typed"], {"name": "typed"}, ""],
    "input": [None, True, 0, 1.5, "x", [], [1], ["n", 1], {"n": "1"}, {"n": 1.5}, {"n": None}],
    "params": [None, True, 0, "x", [], [1]],
    "start_at": [True, 0, "x", [], {}, "2024-13-45T99:00:00", "9999999-01-01", "1e999"],
    "idempotency_key": [True, [], {}, ["k"]],
}


# POST /workflows/typed/runs names its workflow in the URL: see the test after this one.
RUN_START_CASES = [("/api/v1/runs", field) for field in WRONG_RUN_FIELDS] + [
    ("/api/v1/workflows/typed/runs", field) for field in WRONG_RUN_FIELDS if field != "workflow"
]


@pytest.mark.parametrize("path, field", RUN_START_CASES)
def test_wrong_types_in_run_start(api, typed, path, field):
    for value in WRONG_RUN_FIELDS[field]:
        payload = {"workflow": "typed", "input": {"n": 1}, field: value}
        if path != "/api/v1/runs":
            payload.pop("workflow")
        with nothing_changes():
            body = assert_error(post_json(api, path, payload), 400)
        assert field in json.dumps(body), (value, body)


def test_a_workflow_in_the_body_never_redirects_a_start(api, typed, free):
    """/workflows/typed/runs takes no `workflow` field: one in the body, of any type or
    naming another workflow, is refused or ignored; the run is never of another workflow."""
    for value in [*WRONG_RUN_FIELDS["workflow"], "free", "../free", "typed/../free"]:
        payload = {"workflow": value, "input": {"n": 1}}
        response = post_json(api, "/api/v1/workflows/typed/runs", payload)
        if response.status_code == 201:
            run = Run.objects.get(pk=response.json()["run_id"])
            assert run.workflow.name == "typed", (value, run.workflow.name)
        else:
            assert "workflow" in json.dumps(assert_error(response, 400)), value
    assert not Run.objects.filter(workflow__name="free").exists()


WRONG_BULK = [
    {"workflow": "typed"},
    {"workflow": "typed", "inputs": None},
    {"workflow": "typed", "inputs": {}},
    {"workflow": "typed", "inputs": {"n": 1}},
    {"workflow": "typed", "inputs": "x"},
    {"workflow": "typed", "inputs": 5},
    {"workflow": "typed", "inputs": []},
    {"workflow": "typed", "inputs": [1]},
    {"workflow": "typed", "inputs": [None]},
    {"workflow": "typed", "inputs": [[]]},
    {"workflow": "typed", "inputs": [{"n": 1}, "x"]},
    {"workflow": "typed", "inputs": [{"n": 1}, {"n": "2"}]},
    {"workflow": None, "inputs": [{"n": 1}]},
    {"workflow": ["typed"], "inputs": [{"n": 1}]},
    {"inputs": [{"n": 1}]},
]


@pytest.mark.parametrize("payload", WRONG_BULK)
def test_wrong_types_in_bulk(api, typed, payload):
    with nothing_changes():
        assert_error(post_json(api, "/api/v1/runs/bulk", payload), 400)


WRONG_DEFINITION_FIELDS = {
    "name": [None, 5, [], {}, "", "Upper", "has space", "../../etc/passwd", "a/b", "-lead"],
    "description": [5, [], {}, True],
    "input_schema": ["x", 5, [], {"type": "nonsense"}, {"$ref": "http://127.0.0.1:9/s"}],
    "params": [[], "x", 5],
    "schedule": [5, [], True, {"cron": "nope"}, {"cron": 5}, {"cron": "0 0 31 2 *"}],
    "max_active_runs": ["5", 0, -1, 1.5, True, []],
    "overlap": [5, "sometimes", [], {}],
    "timeout": ["x", -1, 0, True, [], {}, 1e300],
    "triggers": ["x", 5, [5], [{}], [{"event": 5}], [{"event": "a", "x": "b"}]],
    "webhook": ["x", [], 5],
    "http": ["x", [], {"method": 5}, {"method": "BREW"}, {"method": []}],
    "steps": [None, "x", 5, [], {}, [5], [None], [[]]],
}
WRONG_STEPS = [
    {"id": 5},
    {"id": None},
    {"id": ""},
    {"id": "a b"},
    {"id": "../x"},
    {"id": "a", "kind": 5},
    {"id": "a", "kind": "teleport"},
    {"id": "a", "kind": []},
    {"id": "a", "depends_on": "b"},
    {"id": "a", "depends_on": [5]},
    {"id": "a", "depends_on": ["a"]},
    {"id": "a", "depends_on": ["ghost"]},
    {"id": "a", "retries": "x"},
    {"id": "a", "retries": -1},
    {"id": "a", "retries": {"max_attempts": "3"}},
    {"id": "a", "retries": {"max_attempts": 10**30}},
    {"id": "a", "retries": {"delay": -1}},
    {"id": "a", "retries": {"backoff": 0.5}},
    {"id": "a", "timeout": "x"},
    {"id": "a", "timeout": -5},
    {"id": "a", "timeout": 1e300},
    {"id": "a", "kind": "approval", "timeout": 10**20},
    {"id": "a", "retries": {"max_attempts": 3, "delay": 1e300}},
    {"id": "a", "retries": {"max_attempts": 3, "max_delay": 1e300}},
    {"id": "a", "retries": {"max_attempts": 3, "backoff": 1e300}},
    {"id": "a", "retries": {"max_attempts": 3, "jitter": 1e300}},
    {"id": "a", "continue_on_failure": "yes"},
    {"id": "a", "kind": "shell"},
    {"id": "a", "kind": "shell", "command": 5},
    {"id": "a", "kind": "shell", "command": ["echo", 5]},
    {"id": "a", "kind": "shell", "command": []},
    {"id": "a", "kind": "shell", "command": "  "},
    {"id": "a", "kind": "shell", "command": "x", "env": [1]},
    {"id": "a", "kind": "shell", "command": "x", "env": {"A B": "x"}},
    {"id": "a", "kind": "python", "callable": 5},
    {"id": "a", "kind": "python", "callable": "os.system; rm -rf /"},
    {"id": "a", "kind": "http"},
    {"id": "a", "kind": "http", "url": 5},
    {"id": "a", "kind": "http", "url": "http://x", "method": 5},
    {"id": "a", "kind": "http", "url": "http://x", "expect_status": "200"},
    {"id": "a", "kind": "approval", "approvals_required": "2"},
    {"id": "a", "kind": "approval", "approvals_required": 0},
    {"id": "a", "kind": "approval", "allow_self_approval": "no"},
    {"id": "a", "kind": "shell", "command": "echo {{ steps.ghost.outputs.x }}"},
    {"id": "a", "kind": "shell", "command": "echo {{ os.environ }}"},
]


def wrong_definitions(group: str):
    base = {"name": "wrong", "steps": [{"id": "a"}]}
    if group == "steps[]":
        return [({**base, "steps": [step]}, "steps") for step in WRONG_STEPS]
    return [({**base, group: value}, group) for value in WRONG_DEFINITION_FIELDS[group]]


@pytest.mark.parametrize("group", [*WRONG_DEFINITION_FIELDS, "steps[]"])
def test_wrong_types_in_definitions(api, typed, group):
    """create, PUT, PATCH and validate all refuse the document and name the field."""
    for document, field in wrong_definitions(group):
        named = {**document, "name": "typed"} if field != "name" else document
        with nothing_changes():
            body = assert_error(post_json(api, "/api/v1/workflows", document), 400)
            assert field in json.dumps(body["details"]), body
            assert_error(send(api, "PUT", "/api/v1/workflows/typed", named), 400)
            response = send(api, "PATCH", "/api/v1/workflows/typed", {field: document[field]})
            if document[field] is None:  # null removes the key in a merge patch
                assert_not_5xx(response)
            else:
                assert_error(response, 400)
            answer = post_json(api, "/api/v1/workflows/validate", document).json()
            assert answer["valid"] is False and field in json.dumps(answer["errors"]), answer


WRONG_ACTIONS = [
    ("cancel", {"grace_seconds": "soon"}),
    ("cancel", {"grace_seconds": -1}),
    ("cancel", {"grace_seconds": 10**30}),
    ("cancel", {"grace_seconds": [1]}),
    ("cancel", {"grace_seconds": "nan"}),
    ("cancel", {"grace_seconds": "inf"}),
    ("cancel", {"wait_for_running": "maybe"}),
    ("cancel", {"wait_for_running": [True]}),
    ("rerun", {}),
    ("rerun", {"from_step": None}),
    ("rerun", {"from_step": 5}),
    ("rerun", {"from_step": ["transform"]}),
    ("rerun", {"from_step": {"id": "transform"}}),
    ("rerun", {"from_step": "transform", "dry_run": "perhaps"}),
    ("rerun", {"from_step": "ghost"}),
    ("rerun", {"from_step": "../transform"}),
    ("rerun", {"from_step": ""}),
]


@pytest.mark.parametrize("action, payload", WRONG_ACTIONS)
def test_wrong_types_in_cancel_and_rerun(api, failed_run, action, payload):
    with nothing_changes():
        assert_error(post_json(api, f"/api/v1/runs/{failed_run.pk}/{action}", payload), (400, 404))


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("comment", [None, [], {}, True, ["ok"], {"text": "ok"}])
def test_wrong_types_in_approval_comments(api, gated, decision, comment):
    run = start("gated")
    with nothing_changes():
        response = post_json(
            api, f"/api/v1/runs/{run.pk}/steps/sign-off/{decision}", {"comment": comment}
        )
        assert_error(response, 400, "invalid")


WRONG_BULK_ACTIONS = [
    {},
    {"run_ids": None},
    {"run_ids": "abc"},
    {"run_ids": [[]]},
    {"run_ids": [{}]},
    {"run_ids": ["a"] * 10_001},
    {"filter": None},
    {"filter": {}},
    {"filter": []},
    {"filter": "status=failed"},
    {"filter": {"status": "exploded"}},
    {"filter": {"statuss": "failed"}},
    {"filter": {"created_after": "yesterday-ish"}},
    {"filter": {"trigger": ["api", "carrier-pigeon"]}},
    {"filter": {"workflow": {"$ne": None}}},
    {"filter": {"sort": "__class__"}},
    {"run_ids": ["a"], "filter": {"status": "failed"}},
]


@pytest.mark.parametrize("action", ["bulk-cancel", "bulk-resume"])
@pytest.mark.parametrize("payload", WRONG_BULK_ACTIONS)
def test_wrong_types_in_bulk_actions(api, failed_run, action, payload):
    with nothing_changes():
        assert_error(post_json(api, f"/api/v1/runs/{action}", payload), 400)


@pytest.mark.parametrize(
    "payload",
    [
        {"days": -1},
        {"days": "x"},
        {"days": 1.5},
        {"days": 10**9},
        {"days": 10**30},
        {"days": [1]},
        {"days": None},
        {"older_than": "forever"},
        {"older_than": "-5d"},
        {"older_than": "1e9d"},
        {"older_than": "9" * 30 + "w"},
        {"older_than": []},
        {"older_than": "30d", "days": 30},
    ],
)
def test_wrong_purge_bodies(api, failed_run, payload):
    with nothing_changes():
        assert_error(post_json(api, "/api/v1/system/purge", payload), 400)


@pytest.mark.parametrize(
    "payload",
    [
        {"input": []},
        {"input": "x"},
        {"input": {"n": "x"}},
        {"params": []},
        {"params": "x"},
        {"input": {"n": 1}, "params": {"x": "\u0000"}},
    ],
)
def test_wrong_dry_run_bodies(api, typed, payload):
    with nothing_changes():
        assert_error(post_json(api, "/api/v1/workflows/typed/dry-run", payload), 400)
