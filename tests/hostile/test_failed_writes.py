"""A database failure in the middle of a write: rows were already written in the request's
transaction when the database refuses the next statement. The API answers a clean 500 in
the error shape (no traceback, no SQL), no run, step or event row is left behind, no task
is queued, and the same request succeeds once the database is well again.

Committed transactions (transaction=True), so each start takes the path it takes in
production: on PostgreSQL a plain start is one multi-statement round trip outside any
Django transaction; with `max_active_runs` or an approval at the root it is a transaction."""

import contextlib

import pytest
from django.db import connection

from runs.engine import dispatch, sql
from runs.engine.dispatch import broker
from runs.models import Run, RunEvent, StepRun
from tests.hostile.conftest import assert_error, nothing_changes, post_json

pytestmark = pytest.mark.django_db(transaction=True)

# A table that does not exist: the database itself raises (OperationalError on SQLite,
# ProgrammingError on PostgreSQL), after the statements before it ran.
FAILING = ("INSERT INTO trellis_injected_failure (id) VALUES (%s)", [1])

LIMITED = """
name: limited
max_active_runs: 5
input_schema: {type: object, required: [n], properties: {n: {type: integer}}}
steps:
  - {id: extract, kind: noop}
  - {id: load, kind: noop, depends_on: [extract]}
"""
GATED = """
name: gated
steps:
  - {id: sign-off, kind: approval}
  - {id: after, kind: noop, depends_on: [sign-off]}
"""


def fail_in_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute(*FAILING)


@contextlib.contextmanager
def failing_after_step_rows(monkeypatch):
    """A new run's INSERTs (run, events, steps) go out, then one more that fails: on
    PostgreSQL in the same round trip, on SQLite in the same transaction."""
    real, fired = sql.insert_statements, []

    def insert_statements(model, names, rows, *args, **kwargs):
        statements = real(model, names, rows, *args, **kwargs)
        if model is not StepRun or not statements:
            return statements
        fired.append(len(rows))
        return [*statements, FAILING]

    with monkeypatch.context() as patch:
        patch.setattr(sql, "insert_statements", insert_statements)
        yield
    assert fired, "no step rows were written"


@contextlib.contextmanager
def failing_at_commit(monkeypatch):
    """One more step row, of a run that does not exist: foreign keys are checked when the
    transaction commits (deferred on both databases), so the failure comes at COMMIT."""
    real, fired = sql.insert_statements, []

    def insert_statements(model, names, rows, *args, **kwargs):
        if model is StepRun and rows:
            orphan = list(rows[0])
            orphan[names.index("run_id")] = "no-such-run"
            rows = [*rows, tuple(orphan)]
            fired.append(len(rows))
        return real(model, names, rows, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(sql, "insert_statements", insert_statements)
        yield
    assert fired, "no step rows were written"


@contextlib.contextmanager
def failing_after_run_writes(monkeypatch):
    """A run transaction's writes (events, the run's new state) go out, then the database
    fails: what starting a run with an approval at the root does after inserting it."""
    real, fired = sql.execute_all, []

    def execute_all(statements, *args, **kwargs):
        real(statements, *args, **{**kwargs, "commit": False})  # its COMMIT never goes out
        fired.append(len(statements))
        fail_in_database()

    with monkeypatch.context() as patch:
        patch.setattr(sql, "execute_all", execute_all)
        yield
    assert fired, "the run's writes never went out"


@contextlib.contextmanager
def failing_in_the_second_insert(monkeypatch):
    """Bulk start: every run row goes in, then half the events, then the database fails."""
    real, calls = sql.insert_many, []

    def insert_many(model, names, rows, *args, **kwargs):
        calls.append(model)
        if len(calls) == 1:
            return real(model, names, rows, *args, **kwargs)
        real(model, names, rows[: len(rows) // 2], *args, **kwargs)
        fail_in_database()

    with monkeypatch.context() as patch:
        patch.setattr(sql, "insert_many", insert_many)
        yield
    assert calls == [Run, RunEvent], calls  # the failure came where it was meant to


def assert_clean_500(response) -> None:
    body = assert_error(response, 500, "server_error")
    text = response.content.decode()
    for leak in ("Traceback", "trellis_injected_failure", "INSERT", 'File "'):
        assert leak not in text, (leak, body)


# (how it fails, path, body, runs and steps the same request makes once it works)
CASES = {
    "start": (
        failing_after_step_rows,
        "/api/v1/runs",
        {"workflow": "typed", "input": {"n": 1}},
        (1, 3),
    ),
    "start, failing at commit": (
        failing_at_commit,
        "/api/v1/workflows/typed/runs",
        {"input": {"n": 1}, "idempotency_key": "once"},  # its IntegrityError branch too
        (1, 3),
    ),
    "start with max_active_runs": (
        failing_after_step_rows,
        "/api/v1/runs",
        {"workflow": "limited", "input": {"n": 1}},
        (1, 2),
    ),
    "start with an approval first": (
        failing_after_run_writes,
        "/api/v1/runs",
        {"workflow": "gated"},
        (1, 2),
    ),
    "bulk start": (
        failing_in_the_second_insert,
        "/api/v1/runs/bulk",
        {"workflow": "typed", "inputs": [{"n": i} for i in range(50)]},
        (50, 150),  # admitted at once: every run gets its three steps
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_database_failure_mid_write_leaves_nothing(api, typed, make_workflow, monkeypatch, case):
    make_workflow(LIMITED)
    make_workflow(GATED)
    failing, path, payload, (runs, steps) = CASES[case]
    with nothing_changes(), failing(monkeypatch):
        assert_clean_500(post_json(api, path, payload))
    assert not Run.objects.exists() and not RunEvent.objects.exists()
    # The failure left no lock, aborted transaction or broken connection behind.
    response = post_json(api, path, payload)
    assert response.status_code == 201, response.content[:500]
    assert Run.objects.count() == runs
    assert StepRun.objects.count() == steps
    assert RunEvent.objects.filter(seq=1).count() == runs
    broker().purge_queue()  # the tasks of the control runs


def test_a_broker_failure_after_the_commit_is_not_reported_as_nothing_done(
    api, typed, monkeypatch, no_background_worker
):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(dispatch, "async_task", broker_down)
    told_failed_but_stored = []
    for path, payload in (
        ("/api/v1/runs", {"workflow": "typed", "input": {"n": 1}}),
        ("/api/v1/runs/bulk", {"workflow": "typed", "inputs": [{"n": 2}]}),
    ):
        before = Run.objects.count()
        response = post_json(api, path, payload)
        if response.status_code >= 500 and Run.objects.count() > before:
            told_failed_but_stored.append(path)
        elif response.status_code < 500:
            assert response.status_code == 201, response.content[:500]
    assert not told_failed_but_stored, told_failed_but_stored
    # Nothing lost: the steps wait, marked not handed out, for the ticker to hand them out
    # (no session worker runs here, so no ticker does it before these lines look).
    queued = StepRun.objects.filter(status="queued")
    assert queued.count() == Run.objects.count() == 2, "each run's first step waits"
    assert not queued.filter(enqueued_at__isnull=False).exists()
