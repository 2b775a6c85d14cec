"""Hostile input: clients of every scope, a few workflows, and `nothing_changes()`, which
proves a refused request stored nothing (row counts and run states are the same after, and
no task was added to the broker's queue)."""

import contextlib
import json

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django_q.brokers.orm import ORM
from django_q.models import OrmQ

from api.models import ApiToken
from runs.engine.dispatch import broker
from runs.models import Approval, LogChunk, Run, RunEvent, StepAttempt, StepOutput, StepRun
from runs.status import RunStatus
from tests.api.conftest import (  # noqa: F401 - fixtures shared with the API tests
    add_log,
    api,
    client_for,
    fast_passwords,
    fresh_throttles,
    reader,
    settle,
    start,
)
from workflows.models import Workflow, WorkflowVersion

ERROR_KEYS = {"error", "code", "details"}

TYPED = """
name: typed
description: one integer in, three steps out
input_schema:
  type: object
  required: [n]
  properties: {n: {type: integer}}
steps:
  - {id: extract, kind: noop}
  - {id: transform, kind: noop, depends_on: [extract]}
  - {id: load, kind: noop, depends_on: [transform]}
"""

FREE = """
name: free
steps:
  - {id: only, kind: noop}
"""

GATED = """
name: gated
steps:
  - {id: sign-off, kind: approval, approvals_required: 1}
"""

MODELS = (
    Workflow,
    WorkflowVersion,
    Run,
    StepRun,
    StepAttempt,
    StepOutput,
    LogChunk,
    RunEvent,
    Approval,
    ApiToken,
    User,
)


def snapshot() -> dict:
    counts = ", ".join(f"(SELECT COUNT(*) FROM {model._meta.db_table})" for model in MODELS)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {counts}")
        state = dict(zip([model.__name__ for model in MODELS], cursor.fetchone(), strict=True))
    state["runs"] = sorted(Run.objects.values_list("pk", "status", "event_seq"))
    state["steps"] = sorted(StepRun.objects.values_list("run_id", "step_id", "status", "attempt"))
    state["workflows"] = sorted(
        Workflow.objects.values_list("name", "current_version_id", "description")
    )
    state["tokens"] = sorted(ApiToken.objects.values_list("pk", "revoked_at", "scopes"))
    state["queued_tasks"] = queued_tasks()
    return state


def queued_tasks() -> int:
    """Tasks in this session's broker queue: OrmQ rows (locked ones too) on the embedded
    default, the Redis list's length with REDIS_URL."""
    queue = broker()
    if isinstance(queue, ORM):  # its queue_size() skips locked rows and may close connections
        return OrmQ.objects.filter(key=queue.list_key).count()
    return queue.queue_size()


@contextlib.contextmanager
def nothing_changes():
    """The block may send any request; afterwards the database must be as it was and the
    broker must hold no new task (a worker may have taken older ones meanwhile)."""
    before = snapshot()
    yield
    after = snapshot()
    queued = before.pop("queued_tasks"), after.pop("queued_tasks")
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert queued[1] <= queued[0], f"tasks were queued: {queued[0]} before, {queued[1]} after"


def assert_error(response, status: int | tuple, code: str | None = None) -> dict:
    """A clear refusal: the status, JSON, exactly the SPEC's error keys."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:2000])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], dict)
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_not_5xx(response) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:2000])
    if response.status_code >= 400:
        assert_error(response, response.status_code)


@pytest.fixture
def runner(client_for, users):  # noqa: F811 - the fixture imported above
    return client_for(users["teammate"], "run")


@pytest.fixture
def typed(make_workflow):
    return make_workflow(TYPED)


@pytest.fixture
def free(make_workflow):
    return make_workflow(FREE)


@pytest.fixture
def gated(make_workflow):
    return make_workflow(GATED)


@pytest.fixture
def failed_run(typed, no_background_worker):
    """A run of `typed` whose middle step failed, with a line of log in each step that ran.
    Settled by hand, so no worker may take its steps meanwhile (a session worker left
    running by an earlier test would, and record the attempt `settle` then writes)."""
    run = settle(start("typed", input={"n": 1}), RunStatus.FAILED, failed="transform")
    add_log(run, "extract", "extracted\n")
    add_log(run, "transform", "line one\nline two\n")
    return run


@pytest.fixture
def admin_browser(db):
    user = User.objects.create_superuser(username="admin", password="pw-admin")
    browser = Client()
    browser.force_login(user)
    return browser


def naming(run, name: str) -> list[tuple[str, str]]:
    """(method, path) of endpoints where `name` stands for a run, a step or a workflow."""
    return [
        ("get", f"/api/v1/runs/{name}"),
        ("get", f"/api/v1/runs/{name}/steps"),
        ("get", f"/api/v1/runs/{name}/logs"),
        ("get", f"/api/v1/runs/{name}/logs/export"),
        ("get", f"/api/v1/runs/{name}/events"),
        ("get", f"/api/v1/runs/{name}/outputs"),
        ("post", f"/api/v1/runs/{name}/cancel"),
        ("post", f"/api/v1/runs/{name}/resume"),
        ("get", f"/api/v1/runs/{run.pk}{name}"),
        ("get", f"/api/v1/runs/{run.pk}/steps/{name}"),
        ("get", f"/api/v1/runs/{run.pk}/steps/{name}/log"),
        ("get", f"/api/v1/runs/{run.pk}/steps/transform{name}/log"),
        ("get", f"/api/v1/runs/{run.pk}/steps/{name}/preview"),
        ("get", f"/api/v1/runs/{run.pk}/steps/{name}/profile"),
        ("post", f"/api/v1/runs/{run.pk}/steps/{name}/approve"),
        ("get", f"/api/v1/workflows/{name}"),
        ("get", f"/api/v1/workflows/{name}/runs"),
        ("get", f"/api/v1/workflows/typed{name}/runs"),
        ("get", f"/api/v1/workflows/{name}/runs/latest"),
        ("post", f"/api/v1/workflows/{name}/runs"),
        ("post", f"/api/v1/workflows/{name}/dry-run"),
        ("post", f"/api/v1/workflows/{name}/validate"),
        ("delete", f"/api/v1/workflows/{name}"),
    ]


def post_json(client, path: str, payload, **extra):
    """POST a body exactly as given: str and bytes are sent unchanged as JSON."""
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return client.generic("POST", path, payload, content_type="application/json", **extra)


def send(client, method: str, path: str, payload, content_type="application/json", **extra):
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return client.generic(method, path, payload, content_type=content_type, **extra)
