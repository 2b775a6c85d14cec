"""Tokens (Token and Bearer, scopes, expiry, revocation), the session with CSRF, throttling."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from api.models import ApiToken
from runs.models import Run
from runs.status import RunStatus
from tests.api.conftest import start

pytestmark = pytest.mark.django_db


def test_no_token_is_401(client, chain):
    response = client.get("/api/v1/runs")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"
    response = client.post("/api/v1/runs", {"workflow": "chain"}, content_type="application/json")
    assert response.status_code == 401
    assert not Run.objects.exists()


def test_token_and_bearer(client_for, users, chain):
    api = client_for(users["owner"], "read")
    assert api.get("/api/v1/runs").status_code == 200
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert bearer.get("/api/v1/runs").status_code == 200
    token = ApiToken.objects.get()
    assert token.last_used_at is not None
    assert token.key_hash != api.key and api.key.startswith(token.prefix)


@pytest.mark.parametrize("header", ["Token nope", "Token a b", "Bearer "])
def test_bad_tokens_are_401(header, db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/runs")
    assert response.status_code == 401
    assert set(response.json()) == {"error", "code", "details"}


def test_expired_and_revoked_tokens_are_401(client_for, users, chain):
    expired = client_for(
        users["owner"], "admin", expires_at=timezone.now() - timezone.timedelta(seconds=1)
    )
    response = expired.get("/api/v1/runs")
    assert response.status_code == 401 and response.json()["error"] == "token expired"
    revoked = client_for(users["owner"], "admin")
    ApiToken.objects.filter(revoked_at__isnull=True, expires_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    assert revoked.get("/api/v1/runs").status_code == 401
    assert revoked.post("/api/v1/runs", {"workflow": "chain"}, format="json").status_code == 401
    assert not Run.objects.exists()


def test_scopes(client_for, users, chain):
    run = start()
    read = client_for(users["owner"], "read")
    assert read.get(f"/api/v1/runs/{run.pk}").status_code == 200
    response = read.post(f"/api/v1/runs/{run.pk}/cancel", format="json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    run_scope = client_for(users["owner"], "run")
    assert run_scope.get(f"/api/v1/runs/{run.pk}").status_code == 200  # run includes read
    assert run_scope.post("/api/v1/system/purge", {"days": 1}, format="json").status_code == 403
    assert run_scope.post(f"/api/v1/runs/{run.pk}/cancel", format="json").status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_session_with_csrf(users, chain):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(users["owner"])
    assert browser.get("/api/v1/runs").status_code == 200
    response = browser.post("/api/v1/runs", {"workflow": "chain"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert not Run.objects.exists()
    browser.get("/admin/login/")  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        "/api/v1/runs", {"workflow": "chain"}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 201
    assert Run.objects.get().created_by == users["owner"]
    # a session of a user who is not staff has no admin scope
    assert (
        browser.post(
            "/api/v1/system/purge", {"days": 1}, format="json", HTTP_X_CSRFTOKEN=token
        ).status_code
        == 403
    )


def test_throttling(api, chain, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "rate", "3/min", raising=False)
    codes = [api.get("/api/v1/runs").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = api.get("/api/v1/runs")
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
