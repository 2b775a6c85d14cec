"""Cross-site requests: a logged-in browser tricked into writing gets 403 without a CSRF
token (or with a foreign Origin), and no foreign origin is ever granted CORS access."""

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from runs.status import RunStatus
from tests.api.conftest import settle, start
from tests.hostile.conftest import assert_error, nothing_changes, send
from tests.hostile.test_auth import READS, request, writes

pytestmark = pytest.mark.django_db

FOREIGN = "https://evil.example"


@pytest.fixture
def runs(typed, gated):
    failed = settle(start("typed", input={"n": 1}), RunStatus.FAILED, failed="transform")
    return failed, start("gated")


@pytest.fixture
def browser(db):
    """A staff session (every scope) in a browser that enforces CSRF like a real one."""
    user = User.objects.create_user(username="staff", password="pw", is_staff=True)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/admin/")  # the browser holds a CSRF cookie, as after any admin page
    return client


def test_session_writes_without_a_csrf_token_are_403(runs, browser):
    failed, waiting = runs
    with nothing_changes():
        for method, path, body in writes(failed, waiting):
            response = request(browser, method, path, body)
            answer = assert_error(response, 403)
            assert "CSRF" in answer["error"], (path, answer)
            for content_type in ("text/plain", "application/x-www-form-urlencoded"):
                response = browser.generic(method, path, b"x=1", content_type=content_type)
                assert_error(response, (403, 415))
    for path in READS:
        assert browser.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "token",
    ["", "wrong", "x" * 64, "\x00", "\U0001f600"],
)
def test_a_wrong_csrf_token_is_403(runs, browser, token):
    with nothing_changes():
        response = send(
            browser, "POST", "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}},
            HTTP_X_CSRFTOKEN=token,
        )  # fmt: skip
        assert_error(response, 403)


def test_a_foreign_origin_with_a_valid_token_is_403(runs, browser):
    token = browser.cookies["csrftoken"].value
    with nothing_changes():
        for origin in (FOREIGN, "null", "http://testserver.evil.example"):
            response = send(
                browser, "POST", "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}},
                HTTP_X_CSRFTOKEN=token, HTTP_ORIGIN=origin, secure=True,
            )  # fmt: skip
            assert_error(response, 403)
        response = send(
            browser, "POST", "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}},
            HTTP_X_CSRFTOKEN=token, HTTP_REFERER=f"{FOREIGN}/page", secure=True,
        )  # fmt: skip
        assert_error(response, 403)


def test_the_same_request_with_the_token_succeeds(runs, browser):
    token = browser.cookies["csrftoken"].value
    response = send(
        browser, "POST", "/api/v1/runs", {"workflow": "typed", "input": {"n": 1}},
        HTTP_X_CSRFTOKEN=token,
    )  # fmt: skip
    assert response.status_code == 201, response.content


def cors_headers(response) -> dict:
    return {k: v for k, v in response.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize("origin", [FOREIGN, "null", "http://localhost:9999", "*"])
def test_no_foreign_origin_is_granted_cors(runs, browser, api, origin):
    failed, _ = runs
    for client in (browser, api):
        for path in [*READS, f"/api/v1/runs/{failed.pk}", "/api/v1/health"]:
            response = client.get(path, HTTP_ORIGIN=origin)
            assert not cors_headers(response), (path, cors_headers(response))
        preflight = client.options(
            "/api/v1/runs",
            HTTP_ORIGIN=origin,
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
        )
        assert not cors_headers(preflight), cors_headers(preflight)
        with nothing_changes():
            response = send(
                client, "POST", "/api/v1/runs/bulk-cancel", {"run_ids": ["x"]}, HTTP_ORIGIN=origin
            )
        assert not cors_headers(response)


def test_pages_cannot_be_framed(browser):
    for path in ("/admin/", "/api/v1/docs/", "/api/v1/runs"):
        response = browser.get(path)
        assert response["X-Frame-Options"] == "DENY", path
