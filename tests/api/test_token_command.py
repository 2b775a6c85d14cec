"""`trellis token create|list|revoke` and the token admin."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from api.models import ApiToken

pytestmark = pytest.mark.django_db


def token(*args) -> str:
    out = io.StringIO()
    call_command("token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_use_list_and_revoke(users, chain):
    key = token(
        "create", "--user", "owner", "--scope", "read,run", "--expires", "30d", "--name", "ci"
    ).strip()
    stored = ApiToken.objects.get()
    assert stored.scope_set == {"read", "run"} and stored.name == "ci"
    assert stored.key_hash == ApiToken.hash_key(key) and key not in stored.key_hash
    assert 29 <= (stored.expires_at - stored.created_at).days <= 30

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.post("/api/v1/runs", {"workflow": "chain"}, format="json").status_code == 201

    rows = json.loads(token("list", "--json"))
    assert rows[0]["prefix"] == stored.prefix and rows[0]["state"] == "active"
    assert key not in token("list")

    token("revoke", key[:9])
    assert ApiToken.objects.get().revoked_at is not None
    assert client.get("/api/v1/runs").status_code == 401
    assert token("list").startswith("no tokens")
    assert json.loads(token("list", "--all", "--json"))[0]["state"] == "revoked"


def test_create_json_shows_the_key_once(users):
    row = json.loads(token("create", "--user", "reviewer", "--scope", "admin", "--json"))
    assert row["key"].startswith(row["prefix"]) and row["scopes"] == "admin"


@pytest.mark.parametrize(
    "args, message",
    [
        (["create", "--user", "ghost"], "no user named"),
        (["create", "--user", "owner", "--scope", "root"], "unknown scope"),
        (["create", "--user", "owner", "--expires", "soon"], "--expires"),
        (["revoke", "trl_nothing"], "no active token"),
    ],
)
def test_refusals(users, args, message):
    with pytest.raises(CommandError, match=message):
        token(*args)
    assert not ApiToken.objects.exists()


def test_revoke_an_ambiguous_prefix_is_refused(users):
    token("create", "--user", "owner")
    token("create", "--user", "owner")
    with pytest.raises(CommandError, match="2 tokens"):
        token("revoke", "trl_")
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 2


def test_admin_adds_a_token_and_shows_its_key_once(client, users):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root", password="pw-root")
    client.force_login(admin)
    response = client.post(
        "/admin/api/apitoken/add/",
        {"user": users["owner"].pk, "name": "deploy", "scope_list": ["run"], "expires_at": ""},
        follow=True,
    )
    assert response.status_code == 200
    stored = ApiToken.objects.get()
    assert stored.scopes == "run" and stored.user == users["owner"]
    messages = [str(m) for m in response.context["messages"]]
    key = messages[0].rsplit(" ", 1)[-1]
    assert stored.key_hash == ApiToken.hash_key(key)
    page = client.get(f"/admin/api/apitoken/{stored.pk}/change/")
    assert page.status_code == 200 and key.encode() not in page.content
    client.post(
        "/admin/api/apitoken/",
        {"action": "revoke", "_selected_action": [stored.pk]},
    )
    stored.refresh_from_db()
    assert stored.revoked_at is not None
