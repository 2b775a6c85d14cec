"""Admin fixtures: a superuser, staff users with and without the approve permission, and
Django test clients logged in as each. Most admin tests need no worker."""

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from runs import services

CHAIN = """
name: chain
description: three steps in a row
steps:
  - {id: extract, kind: noop}
  - {id: transform, kind: noop, depends_on: [extract]}
  - {id: load, kind: noop, depends_on: [transform]}
"""

GATED = """
name: gated
steps:
  - id: sign-off
    kind: approval
    approvals_required: 1
    allow_self_approval: false
  - {id: publish, kind: noop, depends_on: [sign-off]}
"""

NEEDS_INPUT = """
name: needs-input
input_schema:
  type: object
  required: [repo]
  properties: {repo: {type: string}}
steps:
  - {id: only, kind: noop}
"""

# What every staff user here may see; approving is added separately.
STAFF_PERMISSIONS = (
    "workflows.view_workflow",
    "workflows.change_workflow",
    "workflows.view_workflowversion",
    "runs.view_run",
    "runs.add_run",
    "runs.cancel_run",
    "runs.view_steprun",
    "runs.view_approval",
    "runs.view_runevent",
)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def permissions(*names: str) -> list[Permission]:
    found = []
    for name in names:
        app_label, codename = name.split(".")
        found.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return found


def make_staff(username: str, *perms: str) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.user_permissions.add(*permissions(*perms))
    return user


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser(username="admin", password="pw-admin")


@pytest.fixture
def clerk(db) -> User:
    """Staff who can see, start, cancel and resume, but not approve."""
    return make_staff("clerk", *STAFF_PERMISSIONS)


@pytest.fixture
def approver(db) -> User:
    return make_staff("approver", *STAFF_PERMISSIONS, "runs.approve_steprun")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_site(superuser) -> Client:
    return logged_in(superuser)


@pytest.fixture
def chain(make_workflow):
    return make_workflow(CHAIN)


@pytest.fixture
def gated(make_workflow):
    return make_workflow(GATED)


def start(workflow, user=None, **kwargs):
    run, _ = services.run_start(workflow=workflow, user=user, **kwargs)
    return run


def post_action(client: Client, url: str, action: str, ids, **extra):
    """Submit a changelist action as the admin page does, following the redirect."""
    data = {"action": action, "_selected_action": [str(i) for i in ids], "index": 0, **extra}
    return client.post(url, data, follow=True)


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]
