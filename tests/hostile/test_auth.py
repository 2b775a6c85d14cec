"""Authentication and scopes against every writing endpoint: no token, bogus and malformed
headers, expired, revoked and inactive tokens are 401; a token without the scope is 403;
and in every case nothing is changed."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import ApiToken
from runs.status import RunStatus
from tests.api.conftest import settle, start
from tests.hostile.conftest import assert_error, nothing_changes, send

pytestmark = pytest.mark.django_db

DEFINITION = {"name": "typed", "steps": [{"id": "a"}]}


def writes(run, waiting) -> list[tuple[str, str, object]]:
    """(method, path, body) of every endpoint that changes something."""
    return [
        ("POST", "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}}),
        ("POST", "/api/v1/runs/bulk", {"workflow": "typed", "inputs": [{"n": 1}]}),
        ("POST", "/api/v1/workflows/typed/runs", {"input": {"n": 1}}),
        ("POST", f"/api/v1/runs/{run.pk}/resume", None),
        ("POST", f"/api/v1/runs/{run.pk}/rerun", {"from_step": "transform"}),
        ("POST", f"/api/v1/runs/{waiting.pk}/cancel", {}),
        ("POST", "/api/v1/runs/bulk-cancel", {"run_ids": [waiting.pk]}),
        ("POST", "/api/v1/runs/bulk-resume", {"run_ids": [run.pk]}),
        ("POST", f"/api/v1/runs/{waiting.pk}/steps/sign-off/approve", {"comment": "x"}),
        ("POST", f"/api/v1/runs/{waiting.pk}/steps/sign-off/reject", {"comment": "x"}),
        ("POST", "/api/v1/workflows", {**DEFINITION, "name": "fresh"}),
        ("PUT", "/api/v1/workflows/typed", {**DEFINITION, "description": "changed"}),
        ("PATCH", "/api/v1/workflows/typed", {"description": "changed"}),
        ("DELETE", "/api/v1/workflows/gated", None),
        ("POST", "/api/v1/system/purge", {"days": 0}),
    ]


READS = [
    "/api/v1/runs",
    "/api/v1/workflows",
    "/api/v1/workflows/typed",
    "/api/v1/approvals",
    "/api/v1/system/info",
    "/api/v1/dashboard",
    "/api/v1/runs/calendar",
    "/api/v1/search?q=a",
]


@pytest.fixture
def runs(typed, gated):
    failed = settle(start("typed", input={"n": 1}), RunStatus.FAILED, failed="transform")
    return failed, start("gated")


def request(client, method, path, body):
    if body is None:
        return client.generic(method, path)
    return send(client, method, path, body)


BAD_HEADERS = [
    None,
    "Token",
    "Token ",
    "Bearer",
    "Token a b",
    "Token trl_nope",
    "Bearer trl_nope",
    "Token\ttrl_nope",
    "token trl_nope extra words here",
    "Basic dXNlcjpwYXNz",
    "Digest username=x",
    "Token \xe9\xff\xfe",  # bytes that are not UTF-8, as a WSGI server hands them over
    "Token " + "x" * 10_000,
    "Token ' OR 1=1 --",
    "Token %",
    "Token *",
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_missing_bogus_and_malformed_tokens_are_401(runs, header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    failed, waiting = runs
    with nothing_changes():
        for method, path, body in writes(failed, waiting):
            assert_error(request(client, method, path, body), 401)
        for path in READS:
            assert_error(client.get(path), 401)


@pytest.mark.parametrize("state", ["expired", "revoked", "inactive user", "deleted user"])
def test_dead_tokens_are_401(runs, users, client_for, state):
    owner = users["owner"]
    client = client_for(owner, "read", "run", "admin")
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(client.key))
    if state == "expired":
        token.expires_at = timezone.now() - timezone.timedelta(seconds=1)
        token.save()
    elif state == "revoked":
        token.revoked_at = timezone.now()
        token.save()
    elif state == "inactive user":
        owner.is_active = False
        owner.save()
    failed, waiting = runs
    if state == "deleted user":
        from runs.models import Run

        Run.objects.filter(created_by=owner).update(created_by=None)
        owner.delete()
    with nothing_changes():
        for method, path, body in writes(failed, waiting):
            assert_error(request(client, method, path, body), 401)
        assert_error(client.get("/api/v1/runs"), 401)


def test_an_expiry_a_moment_ago_is_already_expired(runs, users, client_for):
    client = client_for(users["owner"], "admin", expires_at=timezone.now())
    with nothing_changes():
        assert_error(send(client, "POST", "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}}), 401)  # fmt: skip


def test_a_read_token_cannot_write(runs, reader):
    failed, waiting = runs
    with nothing_changes():
        for method, path, body in writes(failed, waiting):
            assert_error(request(reader, method, path, body), 403, "permission_denied")
    for path in READS:
        assert reader.get(path).status_code == 200, path


def test_a_run_token_cannot_administer(runs, runner):
    failed, waiting = runs
    admin_only = {
        ("POST", "/api/v1/workflows"),
        ("PUT", "/api/v1/workflows/typed"),
        ("PATCH", "/api/v1/workflows/typed"),
        ("DELETE", "/api/v1/workflows/gated"),
        ("POST", "/api/v1/system/purge"),
    }
    with nothing_changes():
        for method, path, body in writes(failed, waiting):
            if (method, path) in admin_only:
                assert_error(request(runner, method, path, body), 403, "permission_denied")


def test_approving_needs_the_permission_even_with_every_scope(runs, users, client_for):
    failed, waiting = runs
    outsider = client_for(users["outsider"], "read", "run", "admin")
    with nothing_changes():
        for decision in ("approve", "reject"):
            path = f"/api/v1/runs/{waiting.pk}/steps/sign-off/{decision}"
            assert_error(send(outsider, "POST", path, {}), 403)


def test_a_token_in_the_query_string_is_not_accepted(runs, client_for, users):
    key = client_for(users["owner"], "admin").key
    anonymous = APIClient()
    with nothing_changes():
        response = send(anonymous, "POST", f"/api/v1/runs?token={key}", {"workflow": "typed"})
        assert_error(response, 401)
        assert_error(anonymous.get(f"/api/v1/runs?token={key}"), 401)


def test_errors_do_not_tell_which_tokens_exist(runs, client_for, users):
    live = client_for(users["owner"], "read").key
    revoked = client_for(users["owner"], "read")
    ApiToken.objects.filter(key_hash=ApiToken.hash_key(revoked.key)).update(
        revoked_at=timezone.now()
    )
    answers = set()
    for key in ("trl_" + "a" * 43, live[:-1] + ("b" if live[-1] != "b" else "c"), revoked.key):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        answers.add(client.get("/api/v1/runs").json()["error"])
    assert len(answers) == 1, answers
