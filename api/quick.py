"""GET /runs in its common shape (no filter, `status`, `workflow`, `limit`, `offset`) in
SQL written here: for a page of 50 the ORM spends more building and compiling the query
than the database spends answering it. tests/api/test_fast_paths.py holds it to what the
ORM path answers."""

import functools
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.db import connection

from api.serializers import RUN_ROW_COLUMNS
from runs.engine import sql as engine_sql
from runs.models import Run
from runs.status import RunStatus
from workflows.models import Workflow

QUICK_PARAMS = frozenset({"status", "workflow", "limit", "offset"})
RUN_STATUSES = frozenset(RunStatus.values)


def conditions(params) -> tuple[list[str] | None, str | None] | None:
    """(statuses, workflow name) when the query asks for nothing else, each None when not
    given; None when the filter form must judge it (other filters, repeated or empty
    values, anything the form would clean or refuse)."""
    if not set(params) <= QUICK_PARAMS or any(len(params.getlist(k)) > 1 for k in params):
        return None
    statuses = name = None
    if "status" in params:
        statuses = params["status"].split(",")
        if not all(status in RUN_STATUSES for status in statuses):
            return None
    if "workflow" in params:
        name = params["workflow"]
        if not name or name != name.strip() or "\x00" in name:
            return None
    return statuses, name


class QuickRuns:
    """Runs newest first (created_at, then id, descending), as `.values(*RUN_ROW_COLUMNS)`
    rows. Has the part of a QuerySet that RunPagination uses: `order_by()`, a slice and
    `count()`; `rows()` reads the slice."""

    def __init__(self, statuses, workflow, offset: int = 0, limit: int | None = None):
        self.statuses, self.workflow = statuses, workflow
        self.offset, self.limit = offset, limit

    def order_by(self, *fields):
        assert not fields, "QuickRuns has one order"
        return self

    def __getitem__(self, part: slice) -> "QuickRuns":
        start = part.start or 0
        return QuickRuns(self.statuses, self.workflow, start, part.stop - start)

    def _where(self) -> tuple[str, list]:
        where, params = [], []
        if self.statuses:
            where.append(f"r.{q('status')} IN ({', '.join(['%s'] * len(self.statuses))})")
            params += self.statuses
        if self.workflow is not None:
            where.append(f"r.{q('workflow_id')} = ({sql()['workflow_id']})")
            params.append(self.workflow)
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def count(self) -> int:
        where, params = self._where()
        inner = f"SELECT 1 FROM {sql()['runs']} r{where} LIMIT {int(self.limit)}"
        counted = f"SELECT COUNT(*) FROM ({inner}) counted"
        with connection.cursor() as cursor:
            cursor.execute(*sendable(counted, params))
            return cursor.fetchone()[0]

    def rows(self) -> list[dict]:
        where, params = self._where()
        # The limit in the text: a generic plan for `LIMIT $n` assumes a tenth of the
        # table is read, and PostgreSQL would never reuse the plan.
        page = f"{sql()['select']}{where} {sql()['order']} LIMIT {int(self.limit)}"
        if self.offset:
            page, params = f"{page} OFFSET %s", [*params, self.offset]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.cursor.adapters.register_loader("timestamptz", timestamptz_loader())
            cursor.execute(*sendable(page, params))
            found = cursor.fetchall()
        rows = [dict(zip(RUN_ROW_COLUMNS, row, strict=True)) for row in found]
        if connection.vendor != "postgresql":  # SQLite hands out text
            for row in rows:
                for name in DATETIMES:
                    if row[name] is not None:
                        row[name] = to_datetime(row[name])
        return rows


# The columns of RUN_ROW_COLUMNS, in its order, and its timestamps.
COLUMNS = (
    ("r", "id"),
    ("w", "name"),
    ("r", "status"),
    ("r", "trigger"),
    ("u", "username"),
    ("r", "created_at"),
    ("r", "start_at"),
    ("r", "logical_date"),
    ("r", "started_at"),
    ("r", "finished_at"),
    ("r", "duration_ms"),
    ("r", "dag_hash"),
    ("r", "reason"),
    ("r", "error"),
)
DATETIMES = RUN_ROW_COLUMNS[5:10]


def to_datetime(value) -> datetime:
    """What Django's SQLite converter makes of a stored timestamp (sqlite3 has already
    parsed it when it knew the column's type), taking its short way when the database's
    zone is UTC (Django's default)."""
    if connection.timezone_name == "UTC":
        try:
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value
        except ValueError:
            pass
    return connection.ops.convert_datetimefield_value(value, None, connection)


def sendable(statement: str, params: list) -> tuple[str, list]:
    """On PostgreSQL, the statement prepared once a connection has sent it a few times:
    planning the page's join costs more than reading it (see runs.engine.sql)."""
    return engine_sql.sendable(engine_sql.Preparable(statement), params)


def q(name: str) -> str:
    return connection.ops.quote_name(name)


@functools.cache
def sql() -> dict:
    runs, workflows = q(Run._meta.db_table), q(Workflow._meta.db_table)
    users = q(get_user_model()._meta.db_table)
    columns = ", ".join(f"{table}.{q(column)}" for table, column in COLUMNS)
    return {
        "runs": runs,
        "workflow_id": f"SELECT {q('id')} FROM {workflows} WHERE {q('name')} = %s",
        "select": f"SELECT {columns} FROM {runs} r"
        f" INNER JOIN {workflows} w ON w.{q('id')} = r.{q('workflow_id')}"
        f" LEFT OUTER JOIN {users} u ON u.{q('id')} = r.{q('created_by_id')}",
        "order": f"ORDER BY r.{q('created_at')} DESC, r.{q('id')} DESC",
    }


@functools.cache
def timestamptz_loader():
    """psycopg's own loader (its C one when psycopg[binary] is installed), not the Python
    one Django installs to attach its time zone: the session's zone is Django's (UTC), so
    the values are the same, read at a fraction of the cost."""
    import psycopg
    from psycopg.pq import Format

    return psycopg.adapters.get_loader(psycopg.postgres.types["timestamptz"].oid, Format.TEXT)
