"""API fixtures: clients holding tokens of given scopes, workflows, and runs put in a state
directly (most API tests need no worker)."""

from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import ApiToken
from runs import services
from runs.models import LogChunk, Run, StepAttempt, StepOutput, StepRun
from runs.status import RUN_TERMINAL, RunStatus, StepStatus

CHAIN = """
name: chain
description: three steps in a row
input_schema:
  type: object
  properties: {n: {type: integer}}
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
"""


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Users are made per test; the real password hasher would cost seconds each time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Throttle counters, and what web workers reuse for a few seconds (list counts,
    resolved tokens), start empty in every test."""
    from api.auth import forget_tokens
    from api.pagination import counts
    from api.throttling import forget_counts

    for forget in (clear_throttle_counters, counts.clear, forget_tokens, forget_counts):
        forget()
    yield
    for forget in (clear_throttle_counters, counts.clear, forget_tokens, forget_counts):
        forget()


def clear_throttle_counters() -> None:
    """The throttles' counters only: with Redis the cache shares its database with the
    django-q queue of this and any other test session, which `cache.clear()` would wipe."""
    if not settings.REDIS_URL:
        cache.clear()
        return
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in ("trellis:throttle:*", ":*:throttle_*"):  # api.throttling's, DRF's
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)


@pytest.fixture
def client_for(db):
    """client_for(user, "read", "run") -> an APIClient sending a token with those scopes."""

    def make(user, *scopes, expires_at=None) -> APIClient:
        _, key = ApiToken.issue(user=user, scopes=list(scopes or ("read",)), expires_at=expires_at)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        client.key = key
        return client

    return make


@pytest.fixture
def api(client_for, users):
    """The owner with every scope."""
    return client_for(users["owner"], "read", "run", "admin")


@pytest.fixture
def reader(client_for, users):
    return client_for(users["teammate"], "read")


@pytest.fixture
def chain(make_workflow):
    return make_workflow(CHAIN)


@pytest.fixture
def gated(make_workflow):
    return make_workflow(GATED)


def start(workflow="chain", user=None, **kwargs) -> Run:
    run, _ = services.run_start(workflow=workflow, user=user, **kwargs)
    return run


def settle(run: Run, status=RunStatus.SUCCEEDED, failed: str | None = None, ago=0) -> Run:
    """Leave a run as the engine would have: every step done (`failed` fails, the ones
    after it skipped), one attempt each."""
    assert status in RUN_TERMINAL
    now = timezone.now() - timedelta(seconds=ago)
    past_failure = False
    for step in StepRun.objects.filter(run=run).order_by("position"):
        if status == RunStatus.CANCELLED:
            state = StepStatus.CANCELLED
        elif step.step_id == failed:
            state, past_failure = StepStatus.FAILED, True
        else:
            state = StepStatus.SKIPPED if past_failure else StepStatus.SUCCEEDED
        ran = state in (StepStatus.SUCCEEDED, StepStatus.FAILED)
        StepRun.objects.filter(pk=step.pk).update(
            status=state,
            attempt=1 if ran else 0,
            started_at=now - timedelta(seconds=2) if ran else None,
            finished_at=now,
            duration_ms=2000 if ran else None,
            error="exit code 1" if state == StepStatus.FAILED else "",
        )
        if ran:
            StepAttempt.objects.create(
                step_run=step,
                number=1,
                status=state,
                started_at=now - timedelta(seconds=2),
                finished_at=now,
                exit_code=0 if state == StepStatus.SUCCEEDED else 1,
            )
    Run.objects.filter(pk=run.pk).update(
        status=status,
        started_at=now - timedelta(seconds=3),
        finished_at=now,
        duration_ms=3000,
        reason="step_failed" if status == RunStatus.FAILED else "",
    )
    run.refresh_from_db()
    return run


def add_log(run: Run, step_id: str, *texts: str, stream="stdout", attempt=1) -> None:
    """Append chunks to a step's log the way the log writer does: byte offsets per stream."""
    step = StepRun.objects.get(run=run, step_id=step_id)
    last = (
        LogChunk.objects.filter(step_run=step, attempt=attempt, stream=stream)
        .order_by("-offset")
        .first()
    )
    offset = last.offset + len(last.text.encode()) if last else 0
    for text in texts:
        LogChunk.objects.create(
            step_run=step, attempt=attempt, stream=stream, offset=offset, text=text
        )
        offset += len(text.encode())


def add_output(run: Run, step_id: str, key: str, value) -> None:
    step = StepRun.objects.get(run=run, step_id=step_id)
    StepOutput.objects.create(run=run, step_run=step, key=key, value=value)
