"""Run transactions: the run row locked, events collected, written once at the end."""

import contextlib
from contextlib import contextmanager

from django.db import Error, connection, transaction
from django.utils import timezone

from runs.engine import sql
from runs.models import Run, RunEvent


class RunTx:
    """A transaction holding one run's row lock. It collects the run's events, its field
    changes and the writes nobody reads back, and sends them together at the end."""

    def __init__(self, run: Run | None, state_rows: list[tuple] | None = None):
        self.run = run
        self.state_rows = state_rows or []  # see sql.step_state_rows
        self.events: list[tuple] = []  # in the order of sql.EVENT_NAMES
        self.run_changes: dict = {}
        self.writes: list[tuple[str, list]] = []
        self.reads: list[sql.Read] = []
        self.after_commit: list = []
        # Set by a worker that admits the workflow's waiting runs itself when this
        # transaction ends the run (transitions.admit_waiting_claiming): the read of
        # whether any wait is left to it, instead of an admission after the commit.
        self.admits_itself = False
        self.waiting: sql.Read | None = None

    def event(self, type: str, status: str, step_id: str = "", **data) -> None:
        self.run.event_seq += 1
        self.events.append(
            (self.run.pk, self.run.event_seq, type, step_id, status, data, timezone.now())
        )

    def set_run(self, **fields) -> None:
        for name, value in fields.items():
            setattr(self.run, name, value)
        self.run_changes.update(fields)

    def run_status(self, status: str, **data) -> None:
        self.set_run(status=status)
        self.event("run.status", status, **data)

    def step_status(self, step_id: str, status: str, **data) -> None:
        self.event("step.status", status, step_id=step_id, **data)

    def write(self, statements: list[tuple[str, list]]) -> None:
        """Statements to run at the end of the transaction: nothing in it reads them back."""
        self.writes += statements

    def read_at_end(self, read: sql.Read) -> sql.Read:
        """A SELECT sent with the writes at the end; its rows are there after the flush."""
        self.reads.append(read)
        return read

    def flush(self, *, commit: bool = False) -> None:
        if self.events:
            self.writes += sql.insert_statements(RunEvent, sql.EVENT_NAMES, self.events)
            self.run_changes["event_seq"] = self.run.event_seq
        if self.run_changes:
            self.writes.append(
                sql.update_statement(Run, self.run_changes, "id = %s", [self.run.pk])
            )
        sql.execute_all(self.writes, commit=commit, reads=self.reads)
        self.events, self.run_changes, self.writes, self.reads = [], {}, [], []


@contextmanager
def locked_run(
    run_id: str | None, *, with_states: bool = False, due_at=None, skip_locked: bool = False
):
    """Lock the run row for the transaction: every transition of a run goes through here,
    so fan-in decisions and event `seq` allocation never race. With `with_states` the
    step states are read in the same round trip (`tx.state_rows`). With `run_id` None,
    the run is the one with the oldest queued step due at `due_at` that no other worker
    holds, and `tx.run` is None when there is none; so it is with `skip_locked` when
    another transaction holds the run."""
    lock = {"with_states": with_states, "due_at": due_at, "skip_locked": skip_locked}
    if with_states and connection.vendor == "postgresql" and not connection.in_atomic_block:
        with _two_trip_transaction(run_id, lock) as tx:
            yield tx
        return
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        tx = RunTx(*sql.lock_run(run_id, **lock))
        yield tx
        # The outermost transaction's COMMIT can travel with the last writes.
        tx.flush(commit=outermost)
        for callback in tx.after_commit:
            transaction.on_commit(callback)


@contextmanager
def _two_trip_transaction(run_id: str | None, lock: dict):
    """A run transaction in two round trips on PostgreSQL: BEGIN travels with the lock and
    the states, COMMIT with the writes. psycopg would send BEGIN on its own round trip
    in a Django transaction, so the connection stays in autocommit and the transaction
    is ours; the transitions that use it (claims and finishes) make no nested one."""
    connection.ensure_connection()
    try:
        tx = RunTx(*sql.lock_run(run_id, **lock, begin=True))
        yield tx
        tx.flush(commit=True)
    except BaseException:
        # A lost connection has nothing to undo.
        with contextlib.suppress(Error), connection.cursor() as cursor:
            cursor.execute("ROLLBACK")
        raise
    for callback in tx.after_commit:
        callback()
