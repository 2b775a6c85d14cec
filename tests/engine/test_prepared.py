"""PostgreSQL: the engine's statements are prepared once per connection after a few uses,
and answer what their text answers, across rollbacks and reconnections."""

import pytest
from django.db import connection, transaction

from runs import services
from runs.engine import sql, worker
from runs.models import Run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="SQLite has no prepared statements to keep"
    ),
]


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """No task reaches a worker: this process drives the runs itself."""
    from runs.engine import worker

    monkeypatch.setattr(services, "enqueue_steps", lambda steps: None)
    monkeypatch.setattr(worker, "enqueue_steps", lambda steps: None)


ONE_STEP = """
name: prepared
steps:
  - {id: only, kind: noop}
"""


def prepared_here() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'trellis\\_%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def counting_statements() -> list[str]:
    return [text for text in prepared_here() if "SELECT COUNT(*)" in text]


def test_a_statement_is_prepared_at_its_third_use_and_answers_the_same(make_workflow):
    workflow = make_workflow(ONE_STEP)
    connection.close()
    services.run_start(workflow=workflow)
    counts = []
    for use in range(1, sql.PREPARE_AT + 3):
        counts.append(sql.count_active_runs(workflow.pk))
        assert len(counting_statements()) == (1 if use >= sql.PREPARE_AT else 0), use
    expected = Run.objects.filter(workflow=workflow, status__in=["running", "waiting"]).count()
    assert counts == [expected] * len(counts)
    assert "workflow_id = $1" in counting_statements()[0]


def test_prepared_statements_outlive_a_rollback_and_a_new_connection_prepares_again(
    make_workflow,
):
    workflow = make_workflow(ONE_STEP)
    connection.close()
    with pytest.raises(RuntimeError), transaction.atomic():
        for _ in range(sql.PREPARE_AT):
            sql.count_active_runs(workflow.pk)
        raise RuntimeError("rolled back")
    assert len(counting_statements()) == 1
    assert sql.count_active_runs(workflow.pk) == 0  # the kept one, by EXECUTE

    connection.close()
    assert counting_statements() == []
    for _ in range(sql.PREPARE_AT + 1):  # no "prepared statement does not exist"
        assert sql.count_active_runs(workflow.pk) == 0
    assert len(counting_statements()) == 1


def test_runs_driven_through_prepared_statements_end_as_through_text(make_workflow):
    """Many starts, claims and finishes on one connection: every statement of the hot path
    goes from text to EXECUTE on the way, and each run still ends succeeded."""
    workflow = make_workflow(ONE_STEP)
    runs = []
    for _ in range(sql.PREPARE_AT + 3):
        run, _ = services.run_start(workflow=workflow.name)
        worker.execute_step(None, run.pk)
        runs.append(run.pk)
    assert set(Run.objects.filter(pk__in=runs).values_list("status", flat=True)) == {"succeeded"}
    texts = " ".join(prepared_here())
    for part in (
        "FOR UPDATE",
        "INSERT INTO runs_run ",
        "UPDATE runs_steprun",
        "enqueued_at IS NULL",
    ):
        assert part in texts, part


def test_nothing_is_prepared_when_switched_off(make_workflow, settings):
    """TRELLIS_PREPARE_STATEMENTS=false, for a pooler that would send the EXECUTE to a
    server connection that never saw the PREPARE."""
    settings.TRELLIS = {**settings.TRELLIS, "PREPARE_STATEMENTS": False}
    workflow = make_workflow(ONE_STEP)
    connection.close()
    for _ in range(sql.PREPARE_AT + 2):
        assert sql.count_active_runs(workflow.pk) == 0
    assert prepared_here() == []


def test_a_statement_whose_table_changed_fails_once_then_is_prepared_again(make_workflow):
    """A migration run while the process keeps its connection: the prepared statement's
    result no longer fits. That call fails, as any would, and the next ones work."""
    from django.db import DatabaseError

    workflow = make_workflow(ONE_STEP)
    run, _ = services.run_start(workflow=workflow)
    connection.close()
    for _ in range(sql.PREPARE_AT):
        assert [row[2] for row in sql.step_state_rows(run.pk)] == ["only"]
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE runs_steprun ALTER COLUMN step_id TYPE varchar(101)")
    try:
        with pytest.raises(DatabaseError, match="cached plan must not change result type"):
            sql.step_state_rows(run.pk)
        for _ in range(sql.PREPARE_AT + 1):
            assert [row[2] for row in sql.step_state_rows(run.pk)] == ["only"]
        assert any("runs_steprun" in text for text in prepared_here())
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE runs_steprun ALTER COLUMN step_id TYPE varchar(100)")
