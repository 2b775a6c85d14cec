"""The statements of the engine's hot path, in plain SQL.

A step's transition (finish it, decide what became ready, claim the next) is a handful
of statements. Through the ORM each one costs 0.3–0.5 ms of query building and model
instantiation, several times what the database itself takes, so the statements run
every transition are written here once, from the models' own table and column names.
The SQL is the common subset of SQLite (3.35+) and PostgreSQL: `RETURNING`, `IN` lists.
"""

import hashlib
import json
import re
from datetime import UTC, timedelta
from functools import cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models

from runs.models import Run, RunEvent, StepRun
from runs.status import RUN_ACTIVE, RUN_NOT_STARTED


class Raw(str):
    """An SQL expression for an UPDATE's SET clause, e.g. `Raw("attempt + 1")`."""


class Preparable(str):
    """A statement each of whose parameters PostgreSQL can type from where it stands (a
    column compared with it or set to it), so that it can be prepared (`sendable`)."""


# --- prepared statements (PostgreSQL) ---------------------------------------------------
# PostgreSQL parses and plans a statement every time it receives its text. On tables of
# a million runs with a dozen indexes, planning the engine's statements costs more than
# running them (pg_stat_statements, the next due run: 0.37 ms planning, 0.09 ms running).
# Django's psycopg cursors bind parameters client-side, which lets several statements
# share one round trip and rules out psycopg's own prepared statements; so a statement
# sent often on a connection is prepared there with SQL `PREPARE`, once, and sent as
# `EXECUTE name(<the parameters>)` from then on. PostgreSQL keeps prepared statements
# through a rollback, and re-plans them when a table they read changes.

PREPARE_AT = 3  # the use of a text, on one connection, at which it is prepared
MOST_PREPARED = 200  # statements prepared per connection; later ones are sent as text
MOST_PARAMS = 100  # larger statements (multi-row inserts) are sent as text


class _Prepared:
    """What has been prepared on one database connection, and how often other
    statements were sent on it. `stale`: an EXECUTE failed because its statement no
    longer fits (see `_watch_executes`); all of them are dropped before the next."""

    def __init__(self, raw):
        self.raw = raw
        self.executes: dict[str, str] = {}
        self.uses: dict[str, int] = {}
        self.stale = False


# "cached plan must not change result type" (a migration changed a column a prepared
# statement returns, while this process ran) and "prepared statement does not exist"
# (something dropped it: a pooler, DISCARD ALL).
_STALE_STATES = frozenset({"0A000", "26000"})


def _watch_executes(execute, sql, params, many, context):
    """A Django execute wrapper: an EXECUTE of ours failing as stale marks the connection's
    record, so that the next statement starts the connection afresh (the failing one
    fails once, as any statement would whose table changed under it)."""
    try:
        return execute(sql, params, many, context)
    except DatabaseError as error:
        state = getattr(error.__cause__, "sqlstate", None)
        record = getattr(context["connection"], "trellis_prepared", None)
        if state in _STALE_STATES and record is not None and "EXECUTE trellis_" in sql:
            record.stale = True
        raise


def sendable(statement: str, params) -> tuple[str, list]:
    """(statement, params) to send PostgreSQL: the statement itself, or once a
    `Preparable` one has been sent PREPARE_AT times on this connection, the EXECUTE of
    its prepared form, whose parameters are the same. Elsewhere, the statement."""
    if not isinstance(statement, Preparable) or (params and len(params) > MOST_PARAMS):
        return statement, params
    db = connections[DEFAULT_DB_ALIAS]  # `connection` looks it up again at every use
    if db.vendor != "postgresql" or not settings.TRELLIS["PREPARE_STATEMENTS"]:
        return statement, params
    record = getattr(db, "trellis_prepared", None)
    if record is not None and record.stale and record.raw is db.connection:
        with db.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        record = None
    if record is None or record.raw is not db.connection:
        record = db.trellis_prepared = _Prepared(db.connection)
        if _watch_executes not in db.execute_wrappers:
            db.execute_wrappers.append(_watch_executes)
    execute = record.executes.get(statement)
    if execute is not None:
        return execute, params
    uses = record.uses.get(statement, 0) + 1
    if uses < PREPARE_AT or len(record.executes) >= MOST_PREPARED:
        if len(record.uses) > 4 * MOST_PREPARED:
            record.uses.clear()
        record.uses[statement] = uses
        return statement, params
    record.uses.pop(statement, None)
    execute = record.executes[statement] = _prepare(statement)
    return execute, params


def _prepare(statement: str) -> str:
    """PREPARE `statement` on this connection; the EXECUTE that runs it, with a `%s` for
    each of its parameters."""
    name = "trellis_" + hashlib.blake2b(statement.encode(), digest_size=8).hexdigest()
    count = 0

    def number(match: re.Match) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%"
        count += 1
        return f"${count}"

    body = re.sub(r"%[s%]", number, statement)
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE {name} AS {body}")
    return f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"


@cache
def _columns(model) -> dict[str, models.Field]:
    return {field.attname: field for field in model._meta.concrete_fields}


_RUN_FIELDS = _columns(Run)
_RUN_SELECT = "SELECT {} FROM {} WHERE id = %s".format(
    ", ".join(f.column for f in _RUN_FIELDS.values()), Run._meta.db_table
)
_RUN_SELECT_FOR_UPDATE = Preparable(_RUN_SELECT + " FOR UPDATE")
_RUN_SELECT_SKIP_LOCKED = Preparable(_RUN_SELECT + " FOR UPDATE SKIP LOCKED")

STATE_COLUMNS = (
    "id, run_id, step_id, kind, status, continue_on_failure, not_before, attempt, "
    "max_attempts, waiting_since"
)
_STATES_SELECT = Preparable(
    f"SELECT {STATE_COLUMNS} FROM {StepRun._meta.db_table} WHERE run_id = %s ORDER BY position"
)


def _reader(field: models.Field):
    """How a raw column value becomes what the ORM would have given."""
    if isinstance(field, models.DateTimeField):
        return _aware
    if isinstance(field, models.JSONField):
        return _json
    return None


def _aware(value):
    # SQLite hands back naive UTC datetimes; PostgreSQL aware ones already.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


@cache
def _readers(model) -> list:
    return [_reader(field) for field in _columns(model).values()]


def _from_row(model, row) -> models.Model:
    """An instance of `model` from a row of all its columns, in `_columns` order."""
    values = [
        read(v) if read and v is not None else v
        for read, v in zip(_readers(model), row, strict=True)
    ]
    return model.from_db(connection.alias, list(_columns(model)), values)


_DUE = "s.status = 'queued' AND (s.not_before IS NULL OR s.not_before <= %s)"
_ACTIVE_RUN = "r.status IN ('running', 'waiting')"
_NOT_STARTED = ", ".join(repr(str(s)) for s in sorted(RUN_NOT_STARTED))
_RUN_COLUMNS = ", ".join(f"r.{f.column}" for f in _RUN_FIELDS.values())
_RUNS, _STEPS = Run._meta.db_table, StepRun._meta.db_table

# PostgreSQL: the runs of the due queued steps, found from the steps' side (the partial
# index of queued steps holds only those), then each run by its key, oldest step first,
# skipping runs another transaction holds. The plain join of the two tables was planned
# from statistics that lag behind a burst of new runs (a table analyzed when no run was
# active "has" one active run): it became a nested loop over every queued step for every
# active run, 320 ms per claim at 850 queued steps. `IS TRUE` keeps the planner off the
# status index, which the same statistics make look cheaper than the key.
_NEXT_DUE_RUN_POSTGRESQL = Preparable(
    f"WITH due AS (SELECT s.run_id, MIN(s.id) AS first_step FROM {_STEPS} s "
    f"WHERE {_DUE} GROUP BY s.run_id) "
    f"SELECT {_RUN_COLUMNS} FROM due JOIN {_RUNS} r ON r.id = due.run_id "
    f"WHERE ({_ACTIVE_RUN}) IS TRUE ORDER BY due.first_step LIMIT 1 FOR UPDATE OF r SKIP LOCKED"
)
# SQLite: one writer at a time, so nothing to skip; it plans the plain join well without
# statistics, and the grouping above would scan the whole step table there.
_NEXT_DUE_RUN_SQLITE = (
    f"SELECT {_RUN_COLUMNS} FROM {_RUNS} r JOIN {_STEPS} s ON s.run_id = r.id "
    f"WHERE {_DUE} AND {_ACTIVE_RUN} ORDER BY s.id LIMIT 1"
)


# Whether an active run has a due queued step that no broker task will bring (handing
# it out failed or was capped: dispatch.enqueue_steps) or whose task is late (handed
# out more than LATE_TASK_SECONDS ago: lost with a broker restart, or queued behind a
# backlog), read by a finishing worker that has nothing of its own run left to claim:
# the run of one such step, which the worker then tries first (a look for the next due
# run groups every queued step: 250 µs with a backlog of them, against 60 for one run).
_UNHANDED_DUE = Preparable(
    f"SELECT s.run_id FROM {_STEPS} s WHERE {_DUE} "
    "AND (s.enqueued_at IS NULL OR s.enqueued_at < %s) "
    f"AND EXISTS (SELECT 1 FROM {_RUNS} r WHERE r.id = s.run_id AND {_ACTIVE_RUN}) LIMIT 1"
)
LATE_TASK_SECONDS = 1.0


def unhanded_due_read(now) -> "Read":
    adapt = connection.ops.adapt_datetimefield_value
    late = now - timedelta(seconds=LATE_TASK_SECONDS)
    return Read(_UNHANDED_DUE, [adapt(now), adapt(late)])


def lock_run(
    run_id: str | None,
    *,
    with_states: bool = False,
    due_at=None,
    begin: bool = False,
    skip_locked: bool = False,
) -> tuple[Run | None, list[tuple]]:
    """The run's row, locked for the transaction, and with `with_states` the state rows of
    its steps (`step_state_rows`), read after the lock: on PostgreSQL both in one round
    trip. SQLite's `BEGIN IMMEDIATE` already holds the database's write lock, so it has
    no `FOR UPDATE`.

    With `run_id` None: the active run with the oldest queued step due at `due_at`, of
    those no other transaction holds (PostgreSQL skips locked rows), or (None, []).

    `begin`: start the transaction in the same round trip (PostgreSQL, autocommit).
    `skip_locked`: a run another transaction holds, or one that does not exist, is
    (None, []) instead of waited for or an error."""
    postgres = connection.vendor == "postgresql"
    opening = "BEGIN;\n" if begin else ""
    if run_id is None:
        params = [connection.ops.adapt_datetimefield_value(due_at)]
        if postgres:
            statement, params = sendable(_NEXT_DUE_RUN_POSTGRESQL, params)
        else:
            statement = _NEXT_DUE_RUN_SQLITE
        with connection.cursor() as cursor:
            cursor.execute(opening + statement, params)
            if begin:
                cursor.nextset()
            row = cursor.fetchone()
        if row is None:
            return None, []
        run = _from_row(Run, row)
        return run, step_state_rows(run.pk) if with_states else []
    statement, params = _RUN_SELECT, [run_id]
    if postgres:
        locking = _RUN_SELECT_SKIP_LOCKED if skip_locked else _RUN_SELECT_FOR_UPDATE
        statement, params = sendable(locking, params)
        if with_states:
            states_select, _ = sendable(_STATES_SELECT, params)
            statement, params = f"{statement};\n{states_select}", [run_id, run_id]
    with connection.cursor() as cursor:
        cursor.execute(opening + statement, params)
        if begin:
            cursor.nextset()
        row = cursor.fetchone()
        states = []
        if with_states and postgres:
            cursor.nextset()
            states = _states(cursor.fetchall())
    if row is None:
        if skip_locked:
            return None, []
        raise Run.DoesNotExist(f"no run {run_id}")
    if with_states and not postgres:
        states = step_state_rows(run_id)
    return _from_row(Run, row), states


def step_state_rows(run_id: str) -> list[tuple]:
    """(id, run_id, step_id, kind, status, continue_on_failure, not_before, attempt,
    max_attempts, waiting_since) of every step of the run, in definition order."""
    with connection.cursor() as cursor:
        cursor.execute(*sendable(_STATES_SELECT, [run_id]))
        return _states(cursor.fetchall())


def _states(rows: list[tuple]) -> list[tuple]:
    return [
        (*row[:6], _aware(row[6]), row[7], row[8], _aware(row[9]))
        if row[6] is not None or row[9] is not None
        else row
        for row in rows
    ]


def _param(field: models.Field, value):
    convert = _converter(field)
    return value if convert is None else convert(value)


def _converter(field: models.Field):
    """What makes a value of `field` a parameter for this database, or None: as is."""
    if isinstance(field, models.DateTimeField):
        if connection.vendor == "postgresql":
            return None  # psycopg adapts datetimes itself
        return connection.ops.adapt_datetimefield_value
    if isinstance(field, models.JSONField):
        return _json_param
    if isinstance(field, models.ForeignKey):
        return _key_param
    return None


def _json_param(value):
    return None if value is None else json.dumps(value)


def _key_param(value):
    return value.pk if isinstance(value, models.Model) else value


def _set_clause(model, fields: dict) -> tuple[str, list]:
    columns = _columns(model)
    sets, values = [], []
    for name, value in fields.items():
        field = columns.get(name) or model._meta.get_field(name)
        if isinstance(value, Raw):
            sets.append(f"{field.column} = {value}")
        else:
            sets.append(f"{field.column} = %s")
            values.append(_param(field, value))
    return ", ".join(sets), values


def update_statement(model, fields: dict, where: str, params: list) -> tuple[str, list]:
    """`UPDATE <table> SET <fields> WHERE <where>`. A `Raw` value is SQL, anything else a
    parameter."""
    sets, values = _set_clause(model, fields)
    statement = Preparable(f"UPDATE {model._meta.db_table} SET {sets} WHERE {where}")
    return statement, values + list(params)


def update(model, fields: dict, where: str, params: list, returning: str = ""):
    """Run `update_statement`: the number of rows changed, or with `returning` those
    columns of each row changed."""
    statement, values = update_statement(model, fields, where, params)
    if returning:
        statement = Preparable(f"{statement} RETURNING {returning}")
    with connection.cursor() as cursor:
        cursor.execute(*sendable(statement, values))
        return cursor.fetchall() if returning else cursor.rowcount


class Read:
    """A SELECT sent after a transaction's writes, before its COMMIT (`execute_all`); its
    rows once sent."""

    def __init__(self, statement: str, params: list):
        self.statement, self.params = statement, params
        self.rows: list[tuple] | None = None


def execute_all(
    statements: list[tuple[str, list]], *, commit: bool = False, reads: list[Read] = ()
) -> None:
    """Statements whose results nobody reads, then the `reads`. PostgreSQL gets them in
    one round trip (Django's psycopg cursors bind client-side, so several statements can
    share one `execute`), with the transaction's COMMIT when `commit` (psycopg then sees
    the transaction ended, and Django's own commit sends nothing). SQLite runs
    in-process, where a round trip costs nothing, and commits as usual."""
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            for statement, params in statements:
                cursor.execute(statement, params)
            for read in reads:
                cursor.execute(read.statement, read.params)
                read.rows = cursor.fetchall()
            return
        statements = [*statements, *((read.statement, read.params) for read in reads)]
        if commit:
            statements.append(("COMMIT", []))
        if not statements:
            return
        if len(statements) > 1:
            cursor.execute(*_joined(cursor, statements))
        else:
            cursor.execute(*sendable(*statements[0]))
        pending = list(reads)
        while pending:  # the reads' results, in order, among the writes' empty ones
            if cursor.description is not None:
                pending.pop(0).rows = cursor.fetchall()
            if pending and not cursor.nextset():
                raise RuntimeError("a read sent with the writes has no result")


def _joined(cursor, statements: list[tuple[str, list]]) -> tuple[str, None]:
    """Several statements as one, for one PostgreSQL `execute` on `cursor`. Each is bound
    on its own: psycopg keeps the parsed form of short statements, and would parse the
    joined text afresh on every call."""
    bind = cursor.cursor.mogrify
    return ";\n".join(bind(*sendable(statement, params)) for statement, params in statements), None


def in_list(values) -> str:
    return ", ".join(["%s"] * len(values))


def insert_statements(model, names: list[str], rows: list[tuple]) -> list[tuple[str, list]]:
    """Multi-row INSERTs of `rows` (tuples in the order of `names`)."""
    if not rows:
        return []
    columns = _columns(model)
    fields = [columns[name] for name in names]
    into = f"INSERT INTO {model._meta.db_table} ({', '.join(f.column for f in fields)}) VALUES "
    one = f"({in_list(fields)})"
    # Both databases limit the parameters of one statement (SQLite: 32,766).
    per_statement = max(1, 30_000 // len(fields))
    converters = [_converter(field) for field in fields]
    statements = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params = [
            value if convert is None else convert(value)
            for row in chunk
            for convert, value in zip(converters, row, strict=True)
        ]
        statements.append((Preparable(into + ", ".join([one] * len(chunk))), params))
    return statements


def insert_many(model, names: list[str], rows: list[tuple]) -> None:
    """Many rows at once: PostgreSQL's COPY (its client-side parameter binding costs more
    than the database for statements of thousands of values), multi-row INSERTs on
    SQLite."""
    if connection.vendor != "postgresql":
        execute_all(insert_statements(model, names, rows))
        return
    columns = _columns(model)
    fields = [columns[name] for name in names]
    json_at = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    copy_sql = f"COPY {model._meta.db_table} ({', '.join(f.column for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
        for row in rows:
            if json_at:
                row = list(row)
                for i in json_at:
                    row[i] = None if row[i] is None else json.dumps(row[i])
            copy.write_row(row)


EVENT_NAMES = ["run_id", "seq", "type", "step_id", "status", "data", "created_at"]


ATTEMPT_NAMES = [
    "step_run_id",
    "number",
    "status",
    "started_at",
    "finished_at",
    "exit_code",
    "reason",
    "error",
    "worker",
]
OUTPUT_NAMES = ["run_id", "step_run_id", "key", "value"]


def succeed_steps_statement(rows: list[tuple]) -> tuple[str, list]:
    """Succeed running steps that produced nothing, each with its own times, in one
    statement. `rows` are (id, attempt, started_at, finished_at, duration_ms)."""
    table = StepRun._meta.db_table
    whens = " ".join(["WHEN %s THEN %s"] * len(rows))
    adapt = connection.ops.adapt_datetimefield_value
    params = []
    for column in (2, 3, 4):
        for row in rows:
            value = row[column]
            params += [row[0], value if column == 4 else adapt(value)]
    guard = " OR ".join(["(id = %s AND attempt = %s)"] * len(rows))
    params += [value for row in rows for value in row[:2]]
    statement = (
        f"UPDATE {table} SET status = 'succeeded', lease_expires_at = NULL, exit_code = NULL, "
        f"reason = '', error = '', row_count = NULL, "
        f"started_at = CASE id {whens} END, finished_at = CASE id {whens} END, "
        f"duration_ms = CASE id {whens} END "
        f"WHERE status = 'running' AND ({guard})"
    )
    return statement, params


_WAITING_RUN = Preparable(
    f"SELECT 1 FROM {Run._meta.db_table} WHERE workflow_id = %s "
    f"AND status IN ({_NOT_STARTED}) LIMIT 1"
)


def waiting_runs_read(workflow_id: int) -> Read:
    """Whether a run of the workflow has not started yet (pending, queued or scheduled):
    a row when one has."""
    return Read(_WAITING_RUN, [workflow_id])


_ACTIVE = ", ".join(repr(str(s)) for s in sorted(RUN_ACTIVE))
_COUNT_ACTIVE = f"SELECT COUNT(*) FROM {Run._meta.db_table} WHERE status IN ({_ACTIVE})"
_COUNT_ACTIVE_ALL = Preparable(_COUNT_ACTIVE)
_COUNT_ACTIVE_OF = Preparable(f"{_COUNT_ACTIVE} AND workflow_id = %s")


def count_active_runs(workflow_id: int | None = None) -> int:
    """Running and waiting runs, of one workflow or of all."""
    statement, params = _COUNT_ACTIVE_ALL, []
    if workflow_id is not None:
        statement, params = _COUNT_ACTIVE_OF, [workflow_id]
    with connection.cursor() as cursor:
        cursor.execute(*sendable(statement, params))
        return cursor.fetchone()[0]


# PostgreSQL, the worker that freed a slot: the workflow's row locked, with whether it
# limits its active runs (`max_active_runs` set and not 0); then its oldest runs that
# have not started and may start now, as many as the global cap has room for, skipping
# those another transaction holds; with each, whether it has step rows already. The
# second statement's snapshot is taken once the lock is held, so it counts the runs
# another admission of the workflow has just started.
@cache
def _workflow_limit() -> Preparable:
    from workflows.models import Workflow

    table = Workflow._meta.db_table
    return Preparable(
        f"SELECT COALESCE(definition ->> 'max_active_runs', '0') NOT IN ('0', 'false') "
        f"FROM {table} WHERE id = %s FOR UPDATE"
    )


@cache
def _admissible_runs(cap: int) -> Preparable:
    return Preparable(
        f"SELECT {_RUN_COLUMNS}, EXISTS (SELECT 1 FROM {_STEPS} s WHERE s.run_id = r.id) "
        f"FROM {_RUNS} r WHERE r.workflow_id = %s AND r.status IN ({_NOT_STARTED}) "
        "AND (r.start_at IS NULL OR r.start_at <= %s) ORDER BY r.created_at "
        f"LIMIT GREATEST({int(cap)} - ({_COUNT_ACTIVE}), 0) FOR UPDATE OF r SKIP LOCKED"
    )


def begin_admission(workflow_id: int, now) -> tuple[bool, list[tuple[Run, bool]]]:
    """BEGIN, and in the same round trip the workflow's row locked with whether it limits
    its active runs, and the runs it may start now, locked, each with whether it has
    step rows (`_admissible_runs`). PostgreSQL, in autocommit: the caller ends the
    transaction."""
    cap = settings.TRELLIS["MAX_CONCURRENT_RUNS"]
    statements = [
        ("BEGIN", []),
        (_workflow_limit(), [workflow_id]),
        (_admissible_runs(cap), [workflow_id, connection.ops.adapt_datetimefield_value(now)]),
    ]
    with connection.cursor() as cursor:
        cursor.execute(*_joined(cursor, statements))
        cursor.nextset()
        limit = cursor.fetchone()
        cursor.nextset()
        rows = cursor.fetchall()
    limited = bool(limit and limit[0])  # no row: the workflow was deleted, with its runs
    return limited, [(_from_row(Run, row[:-1]), row[-1]) for row in rows]


def rollback() -> None:
    """End the transaction opened with a BEGIN of ours (autocommit), undoing it."""
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK")


_STEP_NAMES = [name for name in _columns(StepRun) if name != "id"]


def insert_run(run: Run, steps: list[StepRun], events: list[tuple]) -> None:
    """Insert a new run with its step rows (if any) and events; the steps get their ids.
    On PostgreSQL one round trip, which is a transaction of its own when none is open."""
    statements = insert_statements(Run, list(_RUN_FIELDS), [_values(run, _RUN_FIELDS)])
    statements += insert_statements(RunEvent, EVENT_NAMES, events)
    insert_steps(steps, after=statements)
    run._state.adding, run._state.db = False, connection.alias


def insert_steps(steps: list[StepRun], *, after: list, commit: bool = False) -> None:
    """Run the statements `after`, then insert `steps`, which get their ids. On PostgreSQL
    one round trip (the steps' INSERT last, for its RETURNING), ending with the COMMIT
    of a transaction opened with a BEGIN of the caller's when `commit` is set (only
    there: on SQLite transactions are Django's)."""
    step_rows = [_values(step, _STEP_NAMES) for step in steps]
    returning = [
        (Preparable(into + " RETURNING id"), params)
        for into, params in insert_statements(StepRun, _STEP_NAMES, step_rows)
    ]
    ids = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            closing = [("COMMIT", [])] if commit else []
            cursor.execute(*_joined(cursor, [*after, *returning, *closing]))
            ids = _returned_ids(cursor)
        else:
            for statement, values in after:
                cursor.execute(statement, values)
            for statement, values in returning:
                cursor.execute(statement, values)
                ids += [row[0] for row in cursor.fetchall()]
    for step, pk in zip(steps, ids, strict=True):
        step.pk = pk
    for row in steps:  # saved: a later save() is an UPDATE, not an INSERT
        row._state.adding, row._state.db = False, connection.alias


def _returned_ids(cursor) -> list:
    """The ids of every RETURNING result of a multi-statement execute."""
    ids = []
    while True:
        if cursor.description is not None:
            ids += [row[0] for row in cursor.fetchall()]
        if not cursor.nextset():
            return ids


def _values(instance, names) -> tuple:
    return tuple(getattr(instance, name) for name in names)


@cache
def _workflow_select() -> str:
    from workflows.models import Workflow, WorkflowVersion

    columns = ", ".join(f"w.{f.column}" for f in _columns(Workflow).values())
    return Preparable(
        f"SELECT {columns}, ({_COUNT_ACTIVE}), v.id, v.dag_hash FROM {Workflow._meta.db_table} w "
        f"LEFT JOIN {WorkflowVersion._meta.db_table} v ON v.id = w.current_version_id "
        "WHERE w.name = %s"
    )


def workflow_by_name(name: str):
    """The workflow, with its current version's id and dag_hash loaded (the rest of the
    version, its definition included, is read only if asked for), or None.

    The count of active runs of all workflows comes with it as `active_runs_read`: a
    start that needs no transaction (see services._start_needs_transaction) checks the
    global cap against it instead of counting again, one round trip fewer."""
    from workflows.models import Workflow, WorkflowVersion

    with connection.cursor() as cursor:
        cursor.execute(*sendable(_workflow_select(), [name]))
        row = cursor.fetchone()
    if row is None:
        return None
    workflow = _from_row(Workflow, row[:-3])
    workflow.active_runs_read, version_id, dag_hash = row[-3:]
    if version_id is not None:
        version = WorkflowVersion.from_db(
            connection.alias, ["id", "dag_hash"], [version_id, dag_hash]
        )
        Workflow.current_version.field.set_cached_value(workflow, version)
    return workflow
