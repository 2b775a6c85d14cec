"""The two hottest requests in their common shapes, without the general machinery.

GET /runs (no filter, `status`, `workflow`, `limit`, `offset`) in SQL written here: for a
page of 50 the ORM spends more building and compiling the query than the database spends
answering it. POST /runs with `workflow`, `input` and an `idempotency_key`, checked here:
DRF's serializer copies its fields for every request, a tenth of the request's CPU.
tests/api/test_fast_paths.py holds both to what the general path answers."""

import functools
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.db import connection

from api.serializers import RUN_ROW_COLUMNS
from runs.engine import sql as engine_sql
from runs.models import Run
from runs.status import RunStatus
from workflows.definitions import NAME_RE
from workflows.models import Workflow

QUICK_PARAMS = frozenset({"status", "workflow", "limit", "offset"})
START_KEYS = frozenset({"workflow", "input", "idempotency_key"})
RUN_STATUSES = frozenset(RunStatus.values)


def conditions(params) -> tuple[list[str] | None, str | None] | None:
    """(statuses, workflow name) when the query asks for nothing else, each None when not
    given; None when the filter form must judge it (other filters, repeated or empty
    values, anything the form would clean or refuse)."""
    if not set(params) <= QUICK_PARAMS or any(len(params.getlist(k)) > 1 for k in params):
        return None
    statuses = name = None
    if "status" in params:
        statuses = list(dict.fromkeys(params["status"].split(",")))  # each once, in order
        if not all(status in RUN_STATUSES for status in statuses):
            return None
    if "workflow" in params:
        name = params["workflow"]
        if not name or name != name.strip() or "\x00" in name:
            return None
    return statuses, name


def start_body(data) -> dict | None:
    """What RunStartSerializer validates a POST /runs body to, when the body has only a
    workflow name, an input object and a plain idempotency key (or null); None when the
    serializer must judge it, which is also how every error gets the serializer's words."""
    if type(data) is not dict or not data.keys() <= START_KEYS:
        return None
    name, value = data.get("workflow"), data.get("input", {})
    if type(name) is not str or not NAME_RE.match(name) or type(value) is not dict:
        return None
    found = {"workflow": name, "input": dict(value)}  # a copy, as the serializer makes
    if "idempotency_key" in data:
        key = data["idempotency_key"]
        # The serializer strips whitespace and refuses NUL and surrogates: not plain.
        plain = type(key) is str and len(key) <= 200 and key.isprintable() and key == key.strip()
        if key is not None and not plain:
            return None
        found["idempotency_key"] = key
    return found


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

    def _matching(self, limit: int, offset: int = 0, ordered: bool = True) -> tuple[str, list]:
        """The ids of the matching runs, newest first, from `offset`, at most `limit`.

        Each is read from the index of the filtered columns alone, which holds created_at
        and id too. PostgreSQL's generic plan cannot tell how many runs match, and would
        otherwise read the newest runs by the created_at index and filter them (or, for a
        count, the whole table): each run of another workflow started since then made the
        page slower (16,000 of them: 7 ms instead of 0.2). Several statuses are read one
        index range each and merged. The limit is in the text: a generic plan for
        `LIMIT $n` assumes a tenth of the table is read, and would never be reused."""
        if self.statuses and len(self.statuses) > 1:
            parts, params = [], []
            for n, status in enumerate(self.statuses):
                part, part_params = self._one_range([status], limit + offset, columns=True)
                parts.append(f"SELECT * FROM ({part}) s{n}")
                params += part_params
            merged = f"SELECT m.{q('id')} FROM ({' UNION ALL '.join(parts)}) m"
            ids = f"{merged} {newest_first('m')} LIMIT {int(limit)}"
        else:
            ids, params = self._one_range(self.statuses, limit, ordered=ordered)
        if offset:
            ids, params = f"{ids} OFFSET %s", [*params, offset]
        return ids, params

    def _one_range(
        self, statuses, limit: int, columns: bool = False, ordered: bool = True
    ) -> tuple[str, list]:
        where, params = [], []
        if statuses:
            where.append(f"f.{q('status')} IN ({', '.join(['%s'] * len(statuses))})")
            params += statuses
        if self.workflow is not None:
            where.append(f"f.{q('workflow_id')} = ({sql()['workflow_id']})")
            params.append(self.workflow)
        selected = f"f.{q('id')}, f.{q('created_at')}" if columns else f"f.{q('id')}"
        ids = f"SELECT {selected} FROM {sql()['runs']} f"
        if where:
            ids += f" WHERE {' AND '.join(where)}"
        if where or ordered:  # a count of every run reads whichever index is smallest
            ids += f" {newest_first('f')}"
        return f"{ids} LIMIT {int(limit)}", params

    def count(self) -> int:
        ids, params = self._matching(self.limit, ordered=False)
        with connection.cursor() as cursor:
            cursor.execute(*sendable(f"SELECT COUNT(*) FROM ({ids}) counted", params))
            return cursor.fetchone()[0]

    def rows(self) -> list[dict]:
        ids, params = self._matching(self.limit, self.offset)
        page = f"{sql()['select']} WHERE r.{q('id')} IN ({ids}) {newest_first('r')}"
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
    }


def newest_first(alias: str) -> str:
    return f"ORDER BY {alias}.{q('created_at')} DESC, {alias}.{q('id')} DESC"


@functools.cache
def timestamptz_loader():
    """psycopg's own loader (its C one when psycopg[binary] is installed), not the Python
    one Django installs to attach its time zone: the session's zone is Django's (UTC), so
    the values are the same, read at a fraction of the cost."""
    import psycopg
    from psycopg.pq import Format

    return psycopg.adapters.get_loader(psycopg.postgres.types["timestamptz"].oid, Format.TEXT)
