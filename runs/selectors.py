"""Reads of runs and workflows shaped for the API and the CLI."""

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from runs.engine.errors import InvalidInput, NotFound
from runs.models import Approval, LogChunk, Run, RunEvent, StepAttempt, StepOutput, StepRun
from runs.scheduler import next_tick, schedule_of
from runs.status import RUN_ACTIVE, RUN_NOT_STARTED, RUN_TERMINAL, RunStatus, StepStatus
from workflows import graph
from workflows.definitions import normalise_retries, step_kind
from workflows.models import Workflow, WorkflowVersion


def run_list(filters: dict | None = None) -> QuerySet:
    filters = filters or {}
    qs = Run.objects.select_related("workflow").order_by("-created_at")
    if filters.get("status"):
        qs = qs.filter(status__in=[s.strip() for s in filters["status"].split(",") if s.strip()])
    if filters.get("workflow"):
        qs = qs.filter(workflow__name=filters["workflow"])
    if filters.get("trigger"):
        qs = qs.filter(trigger=filters["trigger"])
    return qs


def run_summary(run: Run) -> dict:
    return {
        "run_id": run.pk,
        "workflow": run.workflow.name,
        "status": run.status,
        "trigger": run.trigger,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_ms": run.duration_ms,
        "dag_hash": run.dag_hash,
    }


def step_rows(run: Run) -> list[dict]:
    """Step runs with attempt counts; for a run not started yet, its planned steps."""
    steps = list(StepRun.objects.filter(run=run).order_by("position"))
    if not steps and run.status in RUN_NOT_STARTED:
        from runs.engine.plan import plan_for

        plan = plan_for(run.version)
        return [
            {
                "step_id": step_id,
                "kind": plan.step(step_id).get("kind", "noop"),
                "status": "pending",
                "attempts": 0,
                "started_at": None,
                "finished_at": None,
                "duration_ms": None,
                "row_count": None,
                "reason": "",
                "error": "",
            }
            for step_id in plan.order
        ]
    return [
        {
            "step_id": s.step_id,
            "kind": s.kind,
            "status": s.status,
            "attempts": s.attempt,
            "started_at": s.started_at.isoformat() if s.started_at else None,
            "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            "duration_ms": s.duration_ms,
            "row_count": s.row_count,
            "reason": s.reason,
            "error": s.error,
        }
        for s in steps
    ]


def run_detail(run: Run) -> dict:
    return {
        **run_summary(run),
        "input": run.input,
        "params": run.params,
        "reason": run.reason,
        "error": run.error,
        "steps": step_rows(run),
    }


def new_log_chunks(run: Run, step_id: str | None, attempt: int | None, positions: dict):
    """Log chunks not yet seen; `positions` maps (step_run, attempt, stream) -> next offset."""
    qs = LogChunk.objects.filter(step_run__run=run).select_related("step_run")
    if step_id:
        qs = qs.filter(step_run__step_id=step_id)
    if attempt:
        qs = qs.filter(attempt=attempt)
    if positions:
        seen = Q()
        for (step_run_id, att, stream), offset in positions.items():
            seen |= Q(step_run_id=step_run_id, attempt=att, stream=stream, offset__lt=offset)
        qs = qs.exclude(seen)
    chunks = list(qs.order_by("created_at", "id"))
    for chunk in chunks:
        key = (chunk.step_run_id, chunk.attempt, chunk.stream)
        positions[key] = max(positions.get(key, 0), chunk.offset + 1)
    return chunks


# --- runs for the API -------------------------------------------------------------------


def run_queryset() -> QuerySet:
    """Runs newest first, with what a list row shows, in one query."""
    return Run.objects.select_related("workflow", "created_by").order_by("-created_at", "-id")


def run_for_api(run_id: str) -> Run:
    run = (
        Run.objects.select_related("workflow", "version", "created_by")
        .filter(pk=str(run_id))
        .first()
    )
    if run is None:
        raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
    return run


def latest_run(workflow: Workflow) -> Run:
    run_id = (
        Run.objects.filter(workflow=workflow)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    if run_id is None:
        raise NotFound(f"workflow {workflow.name!r} has no runs yet", code="run_not_found")
    return run_for_api(run_id)


FIRST_WAIT_POLL = 0.005


def run_wait(run_id: str, seconds: float, poll: float = 0.1) -> Run:
    """The run once it is finished or waits for an approval, or as it is after `seconds`
    (at once for a run scheduled to start later than that). Read again after 5 ms, then
    twice as long each time up to `poll`: a short run is answered a few milliseconds
    after it ends (a fixed 0.1 s added up to 100 ms to a 10 ms run), a long one costs a
    read per `poll`."""
    deadline = time.monotonic() + seconds
    latest_start = timezone.now() + timedelta(seconds=seconds)
    pause = min(FIRST_WAIT_POLL, poll)
    while True:
        run = run_for_api(run_id)
        if run.status in RUN_TERMINAL or run.status == RunStatus.WAITING:
            return run
        if run.status == RunStatus.SCHEDULED and run.start_at and run.start_at > latest_start:
            return run
        if time.monotonic() >= deadline:
            return run
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, poll)


# --- steps -------------------------------------------------------------------------------


def step_run_get(run: Run, step_id: str) -> StepRun:
    step = StepRun.objects.filter(run=run, step_id=step_id).first()
    if step is None:
        raise NotFound(f"run {run.pk} has no step {step_id!r}", code="step_not_found")
    return step


def step_details(run: Run, step_id: str | None = None) -> list[dict]:
    """Step runs with their attempts and approval decisions, in three queries. A run not
    started yet shows its planned steps."""
    definition = run.version.definition
    dag = graph.graph_of(definition["steps"])
    specs = {step["id"]: step for step in definition["steps"]}
    steps = StepRun.objects.filter(run=run).order_by("position")
    if step_id is not None:
        if step_id not in dag:
            raise NotFound(f"run {run.pk} has no step {step_id!r}", code="step_not_found")
        steps = steps.filter(step_id=step_id)
    steps = list(steps)
    if not steps:
        ids = [step_id] if step_id is not None else graph.order(dag)
        return [_planned_step(s, specs[s], dag[s]) for s in ids]
    attempts: dict[int, list[dict]] = {}
    for attempt in StepAttempt.objects.filter(step_run__in=steps).order_by("number"):
        attempts.setdefault(attempt.step_run_id, []).append(_attempt_row(attempt))
    for s in steps:
        # An attempt's row is written when it ends; the one in progress lives on the step.
        if s.status == StepStatus.RUNNING:
            current = StepAttempt(
                number=s.attempt, status=s.status, started_at=s.started_at, worker=s.worker
            )
            attempts.setdefault(s.pk, []).append(_attempt_row(current))
    decisions: dict[int, list[dict]] = {}
    approvals = Approval.objects.filter(step_run__in=steps).select_related("user")
    for approval in approvals.order_by("created_at"):
        decisions.setdefault(approval.step_run_id, []).append(_decision_row(approval))
    return [
        {
            "step_id": s.step_id,
            "kind": s.kind,
            "status": s.status,
            "depends_on": dag.get(s.step_id, []),
            "attempt": s.attempt,
            "max_attempts": s.max_attempts,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "duration_ms": s.duration_ms,
            "waiting_since": s.waiting_since,
            "exit_code": s.exit_code,
            "row_count": s.row_count,
            "reason": s.reason,
            "error": s.error,
            "continue_on_failure": s.continue_on_failure,
            "approvals_required": _approvals_required(specs.get(s.step_id), s.kind),
            "attempts": attempts.get(s.pk, []),
            "approvals": decisions.get(s.pk, []),
        }
        for s in steps
    ]


def _planned_step(step_id: str, spec: dict, depends_on: list[str]) -> dict:
    kind = step_kind(spec)
    return {
        "step_id": step_id,
        "kind": kind,
        "status": StepStatus.PENDING,
        "depends_on": depends_on,
        "attempt": 0,
        "max_attempts": normalise_retries(spec)["max_attempts"],
        "started_at": None,
        "finished_at": None,
        "duration_ms": None,
        "waiting_since": None,
        "exit_code": None,
        "row_count": None,
        "reason": "",
        "error": "",
        "continue_on_failure": bool(spec.get("continue_on_failure")),
        "approvals_required": _approvals_required(spec, kind),
        "attempts": [],
        "approvals": [],
    }


def _approvals_required(spec: dict | None, kind: str) -> int | None:
    if kind != "approval":
        return None
    return int((spec or {}).get("approvals_required", 1))


def _attempt_row(attempt: StepAttempt) -> dict:
    duration = None
    if attempt.finished_at:
        duration = int((attempt.finished_at - attempt.started_at).total_seconds() * 1000)
    return {
        "number": attempt.number,
        "status": attempt.status,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "duration_ms": duration,
        "exit_code": attempt.exit_code,
        "reason": attempt.reason,
        "error": attempt.error,
        "worker": attempt.worker,
    }


def _decision_row(approval: Approval) -> dict:
    return {
        "attempt": approval.attempt,
        "user": approval.user.get_username(),
        "decision": approval.decision,
        "comment": approval.comment,
        "created_at": approval.created_at,
    }


# --- logs --------------------------------------------------------------------------------

LOG_STREAMS = ("stdout", "stderr")
LOG_PAGE_BYTES = 1024 * 1024
LEVEL_STREAMS = {"info": "stdout", "error": "stderr"}
STREAM_LEVELS = {"stdout": "info", "stderr": "error"}


def step_log(
    step_run: StepRun,
    *,
    attempt: int | None = None,
    stream: str | None = None,
    offset: int | None = None,
    limit: int = LOG_PAGE_BYTES,
    tail: int | None = None,
) -> dict:
    """One attempt's stdout and stderr (the latest attempt by default).

    Paging: the bytes [offset, offset + limit) of each stream, cut on character
    boundaries; `next_offset` is where to go on and `more` says whether bytes are
    already there. `tail` gives the last lines of each stream instead."""
    attempt = attempt or step_run.attempt
    if attempt < 0 or attempt > step_run.attempt:
        raise NotFound(
            f"step {step_run.step_id!r} has no attempt {attempt} (it has {step_run.attempt})",
            code="attempt_not_found",
        )
    streams = [stream] if stream else list(LOG_STREAMS)
    result = {
        "step_id": step_run.step_id,
        "attempt": attempt,
        "stdout": "",
        "stderr": "",
        "offset": None if tail is not None else offset or 0,
        "next_offset": 0,
        "more": False,
    }
    if attempt == 0:  # not started: no log yet
        return result
    chunks = LogChunk.objects.filter(step_run=step_run, attempt=attempt)
    ends, pending = [], []
    for name in streams:
        rows = chunks.filter(stream=name)
        if tail is not None:
            text, end, more = *_log_tail(rows, tail), False
        else:
            text, end, more = _log_window(rows, offset or 0, limit)
        result[name] = text
        ends.append(end)
        if more:
            pending.append(end)
    result["next_offset"] = min(pending) if pending else max(ends)
    result["more"] = bool(pending)
    return result


def run_step_log(run: Run, step_id: str, **options) -> dict:
    step = StepRun.objects.filter(run=run, step_id=step_id).first()
    if step is None:
        if step_id not in {spec["id"] for spec in run.version.definition["steps"]}:
            raise NotFound(f"run {run.pk} has no step {step_id!r}", code="step_not_found")
        step = StepRun(step_id=step_id, attempt=0)  # planned, not started
    return step_log(step, **options)


def _log_size(rows: QuerySet) -> int:
    last = rows.order_by("-offset").values_list("offset", "text").first()
    return last[0] + len(last[1].encode()) if last else 0


def _log_window(rows: QuerySet, start: int, limit: int) -> tuple[str, int, bool]:
    """(text of bytes [start, start + limit), the byte position it ends at, more after it)."""
    base = rows.filter(offset__lte=start).order_by("-offset").values_list("offset", flat=True)
    base = base.first() or 0
    parts = list(
        rows.filter(offset__gte=base, offset__lt=start + limit)
        .order_by("offset")
        .values_list("text", flat=True)
    )
    data = "".join(parts).encode()
    begin = start - base
    while 0 < begin < len(data) and data[begin] & 0xC0 == 0x80:  # inside a character
        begin += 1
    end = max(begin, min(start - base + limit, len(data)))
    while begin < end < len(data) and data[end] & 0xC0 == 0x80:
        end -= 1
    position = base + end
    return data[begin:end].decode("utf-8", errors="replace"), position, _log_size(rows) > position


def _log_tail(rows: QuerySet, lines: int) -> tuple[str, int]:
    """(the last `lines` lines, the size of the stream)."""
    parts: list[str] = []
    size = None
    newlines = 0
    for offset, text in rows.order_by("-offset").values_list("offset", "text").iterator(50):
        if size is None:
            size = offset + len(text.encode())
        parts.append(text)
        newlines += text.count("\n")
        if newlines > lines:
            break
    kept = "".join(reversed(parts)).splitlines(keepends=True)
    return "".join(kept[-lines:] if lines else []), size or 0


def iter_log_lines(
    run: Run,
    *,
    step_id: str | None = None,
    level: str | None = None,
    attempt: int | None = None,
) -> Iterator[dict]:
    """Log lines of a run in the order they were written; stderr is level `error`.

    A line split over two chunks is joined and carries the time it began."""
    rows = LogChunk.objects.filter(step_run__run=run)
    if step_id:
        rows = rows.filter(step_run__step_id=step_id)
    if level:
        rows = rows.filter(stream=LEVEL_STREAMS[level])
    if attempt:
        rows = rows.filter(attempt=attempt)
    rows = rows.order_by("created_at", "id").values_list(
        "step_run_id", "step_run__step_id", "attempt", "stream", "text", "created_at"
    )
    partial: dict[tuple, tuple[str, str, object]] = {}
    for step_run_id, sid, att, stream, text, created in rows.iterator(200):
        key = (step_run_id, att, stream)
        head, _, began = partial.pop(key, ("", sid, created))
        lines = (head + text).split("\n")
        rest = lines.pop()
        for line in lines:
            yield _log_line(run.pk, sid, att, stream, line, began)
            began = created
        if rest:
            partial[key] = (rest, sid, began)
    for (_, att, stream), (rest, sid, began) in partial.items():
        yield _log_line(run.pk, sid, att, stream, rest, began)


def _log_line(run_id, step_id, attempt, stream, message, timestamp) -> dict:
    return {
        "run_id": run_id,
        "step_id": step_id,
        "attempt": attempt,
        "stream": stream,
        "level": STREAM_LEVELS[stream],
        "message": message.rstrip("\r"),
        "timestamp": timestamp,
    }


# --- outputs -----------------------------------------------------------------------------

PREVIEW_RECORDS = 50


def run_outputs(run: Run, step_id: str | None = None) -> list[dict]:
    rows = StepOutput.objects.filter(run=run)
    if step_id:
        rows = rows.filter(step_run__step_id=step_id)
    rows = rows.order_by("step_run__position", "key").values_list(
        "step_run__step_id", "key", "value"
    )
    return [{"step_id": sid, "key": key, "value": value} for sid, key, value in rows]


def step_records(run: Run, step_id: str, key: str | None = None) -> tuple[str, list]:
    """(output key, records) of a step's list output: `key`, or its first list output."""
    step = step_run_get(run, step_id)
    outputs = StepOutput.objects.filter(step_run=step).order_by("key")
    if key:
        outputs = outputs.filter(key=key)
    for output in outputs:
        if isinstance(output.value, list):
            return output.key, output.value
    what = f"output {key!r} that is a list" if key else "list output"
    raise NotFound(f"step {step_id!r} of run {run.pk} has no {what}", code="no_records")


def records_preview(records: list, limit: int = PREVIEW_RECORDS) -> dict:
    columns: dict[str, None] = {}
    for record in records[:limit]:
        if isinstance(record, dict):
            columns.update(dict.fromkeys(record))
    return {"total": len(records), "columns": list(columns), "records": records[:limit]}


def records_profile(records: list) -> list[dict]:
    """Per column: type, nulls, min, max and distinct count. A missing key counts as null;
    records that are not mappings make one column named `value`."""
    rows = [record if isinstance(record, dict) else {"value": record} for record in records]
    names = list(dict.fromkeys(name for row in rows for name in row))
    return [_column_profile(name, [row.get(name) for row in rows]) for name in names]


JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))


def _json_type(value) -> str:
    if value is None:
        return "null"
    for python_type, name in JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return "array" if isinstance(value, list) else "object"


def _column_profile(name: str, values: list) -> dict:
    present = [v for v in values if v is not None]
    types = {_json_type(v) for v in present}
    if types == {"integer", "number"}:
        types = {"number"}
    kind = types.pop() if len(types) == 1 else ("mixed" if types else "null")
    comparable = present if kind in ("integer", "number", "string", "boolean") else []
    distinct = {json.dumps(v, sort_keys=True) for v in present}
    return {
        "name": name,
        "type": kind,
        "count": len(values),
        "nulls": len(values) - len(present),
        "distinct": len(distinct),
        "min": min(comparable) if comparable else None,
        "max": max(comparable) if comparable else None,
    }


# --- events ------------------------------------------------------------------------------


def run_events(run: Run, *, after: int = 0, limit: int = 1000) -> list[dict]:
    rows = RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[:limit]
    return [event_row(event) for event in rows]


def event_row(event: RunEvent) -> dict:
    return {
        "seq": event.seq,
        "type": event.type,
        "run_id": event.run_id,
        "step_id": event.step_id or None,
        "status": event.status or None,
        "at": event.created_at,
        "data": event.data,
    }


# --- approvals ---------------------------------------------------------------------------


def approvals_inbox() -> QuerySet:
    """Every step waiting for approval, oldest first, with its run and decisions so far."""
    return (
        StepRun.objects.filter(status=StepStatus.WAITING_APPROVAL)
        .select_related("run__workflow", "run__version", "run__created_by")
        .prefetch_related(Prefetch("approvals", queryset=Approval.objects.select_related("user")))
        .order_by("waiting_since", "pk")
    )


def approval_row(step: StepRun) -> dict:
    spec = next((s for s in step.run.version.definition["steps"] if s["id"] == step.step_id), {})
    # Only this round's decisions count; earlier rounds are in the step's history.
    decisions = [_decision_row(a) for a in step.approvals.all() if a.attempt == step.attempt]
    return {
        "run_id": step.run_id,
        "workflow": step.run.workflow.name,
        "step_id": step.step_id,
        "waiting_since": step.waiting_since,
        "started_by": step.run.created_by.get_username() if step.run.created_by else None,
        "approvals_required": int(spec.get("approvals_required", 1)),
        "allow_self_approval": bool(spec.get("allow_self_approval", True)),
        "approvals": len([d for d in decisions if d["decision"] == "approved"]),
        "decisions": decisions,
    }


# --- workflows ---------------------------------------------------------------------------


def workflow_queryset() -> QuerySet:
    """Workflows with their current version and last run, in one query."""
    last = Run.objects.filter(workflow=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        Workflow.objects.select_related("current_version")
        .defer("current_version__definition")
        .annotate(
            last_run_id=Subquery(last.values("pk")[:1]),
            last_status=Subquery(last.values("status")[:1]),
            last_run_at=Subquery(last.values("created_at")[:1]),
        )
        .order_by("name")
    )


def workflow_for_api(name: str) -> Workflow:
    workflow = (
        workflow_queryset()
        .prefetch_related(
            Prefetch(
                "versions",
                queryset=WorkflowVersion.objects.select_related("created_by")
                .defer("definition")
                .order_by("-number"),
            )
        )
        .filter(name=name)
        .first()
    )
    if workflow is None:
        raise NotFound(f"no workflow named {name!r}", code="workflow_not_found")
    return workflow


def workflow_next_run(workflow: Workflow, now=None):
    schedule = schedule_of(workflow)
    if schedule is None or workflow.is_paused:
        return None
    return workflow.next_run_at or next_tick(schedule, now or timezone.now())


def workflows_with_schedule(queryset: QuerySet, value: bool) -> QuerySet:
    rows = queryset.values_list("pk", "definition")
    ids = [pk for pk, doc in rows if bool(schedule_of(Workflow(definition=doc))) == value]
    return queryset.filter(pk__in=ids)


class _PendingOutputs(dict):
    """Outputs of a step that has not run: each reads as its own template."""

    def __init__(self, step_id: str):
        super().__init__()
        self.step_id = step_id

    def get(self, key, default=None):
        return f"{{{{ steps.{self.step_id}.outputs.{key} }}}}"


PLAN_HIDDEN_KEYS = ("id", "kind", "depends_on", "description")


def dry_run(workflow: Workflow, *, input=None, params=None) -> dict:
    """What a run with this input would do: topological layers and each step's arguments
    rendered. Templates of upstream outputs stay as they are. Nothing is stored."""
    from runs.engine.templates import render, shell_script
    from runs.services import check_input

    value = check_input(workflow, input)
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("params must be an object")
    document = workflow.definition
    all_params = {**(document.get("params") or {}), **(params or {})}
    dag = graph.graph_of(document["steps"])
    layers = graph.layers(dag)
    layer_of = {step_id: index for index, layer in enumerate(layers) for step_id in layer}
    context = {
        "input": value,
        "params": all_params,
        "run": {"id": None, "workflow": workflow.name, "trigger": "api", "logical_date": None},
        "steps": {step_id: {"outputs": _PendingOutputs(step_id)} for step_id in dag},
    }
    steps = []
    for spec in document["steps"]:
        args = {k: v for k, v in spec.items() if k not in PLAN_HIDDEN_KEYS}
        rendered = render(args, context)
        if step_kind(spec) == "shell" and isinstance(spec.get("command"), str):
            script, env = shell_script(spec["command"], context)
            rendered.update(command=script, env={**(rendered.get("env") or {}), **env})
        steps.append(
            {
                "step_id": spec["id"],
                "kind": step_kind(spec),
                "layer": layer_of[spec["id"]],
                "depends_on": dag[spec["id"]],
                "args": rendered,
            }
        )
    version = workflow.current_version
    return {
        "workflow": workflow.name,
        "version": version.number if version else None,
        "dag_hash": version.dag_hash if version else "",
        "input": value,
        "params": all_params,
        "layers": layers,
        "steps": steps,
    }


# --- overviews ---------------------------------------------------------------------------

SUCCEEDED = (RunStatus.SUCCEEDED, RunStatus.PARTIALLY_SUCCEEDED)


def run_calendar(days: int, now=None) -> list[dict]:
    """Runs created per day over the last `days` days (today included), oldest first."""
    today = timezone.localdate(now or timezone.now())
    first = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    counts = {
        row["day"]: row
        for row in Run.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            total=Count("pk"),
            succeeded=Count("pk", filter=Q(status__in=SUCCEEDED)),
            failed=Count("pk", filter=Q(status=RunStatus.FAILED)),
        )
        .order_by()
    }
    calendar = []
    for index in range(days):
        day = first + timedelta(days=index)
        row = counts.get(day, {})
        calendar.append(
            {
                "date": day,
                "succeeded": row.get("succeeded", 0),
                "failed": row.get("failed", 0),
                "total": row.get("total", 0),
            }
        )
    return calendar


def run_counts_by_status(statuses) -> dict[str, int]:
    rows = Run.objects.filter(status__in=statuses).values("status").annotate(n=Count("pk"))
    counts = dict.fromkeys(statuses, 0)
    counts.update({row["status"]: row["n"] for row in rows.order_by()})
    return counts


def dashboard(now=None, recent: int = 10, top: int = 5) -> dict:
    now = now or timezone.now()
    since = now - timedelta(days=7)
    week = {
        row["workflow_id"]: row
        for row in Run.objects.filter(created_at__gte=since)
        .values("workflow_id")
        .annotate(total=Count("pk"), failed=Count("pk", filter=Q(status=RunStatus.FAILED)))
        .order_by()
    }
    workflows = []
    for workflow in workflow_queryset():
        counts = week.get(workflow.pk, {})
        workflows.append(
            {
                "name": workflow.name,
                "description": workflow.description,
                "last_run_id": workflow.last_run_id,
                "last_status": workflow.last_status,
                "last_run_at": workflow.last_run_at,
                "next_run_at": workflow_next_run(workflow, now),
                "runs_7d": counts.get("total", 0),
                "failed_7d": counts.get("failed", 0),
            }
        )
    failing = sorted(
        (w for w in workflows if w["failed_7d"]), key=lambda w: (-w["failed_7d"], w["name"])
    )
    return {
        "workflows": workflows,
        "active": run_counts_by_status(sorted(RUN_ACTIVE | RUN_NOT_STARTED)),
        "recent_runs": list(run_queryset()[:recent]),
        "trends": run_calendar(7, now),
        "top_failing": [
            {
                "workflow": w["name"],
                "failed": w["failed_7d"],
                "total": w["runs_7d"],
                "failure_rate": round(w["failed_7d"] / w["runs_7d"], 3),
            }
            for w in failing[:top]
        ],
    }


RUN_ID_PREFIX_RE = re.compile(r"^[0-9a-f]{1,32}\Z")
SEARCH_EVENT_DAYS = 30


def search(q: str, limit: int = 30) -> dict:
    """Workflows by name or description, steps by id, runs by id prefix, recent events by
    step, type or status."""
    q = q.strip()
    workflows = Workflow.objects.filter(Q(name__icontains=q) | Q(description__icontains=q))
    steps = []
    needle = q.lower()
    for name, definition in Workflow.objects.order_by("name").values_list("name", "definition"):
        for spec in definition.get("steps", []):
            if needle in str(spec.get("id", "")).lower() and len(steps) < limit:
                steps.append({"workflow": name, "step_id": spec["id"], "kind": step_kind(spec)})
    runs = Run.objects.none()
    if RUN_ID_PREFIX_RE.match(q.lower()):
        runs = run_queryset().filter(pk__startswith=q.lower())
    since = timezone.now() - timedelta(days=SEARCH_EVENT_DAYS)
    events = RunEvent.objects.filter(created_at__gte=since).filter(
        Q(step_id__icontains=q) | Q(type__icontains=q) | Q(status__icontains=q)
    )
    return {
        "workflows": list(workflows.order_by("name").values("name", "description")[:limit]),
        "steps": steps,
        "runs": list(runs[:limit]),
        "events": [event_row(e) for e in events.order_by("-created_at", "-id")[:limit]],
    }


def system_counts() -> dict:
    counts = run_counts_by_status([RunStatus.RUNNING, RunStatus.WAITING, RunStatus.QUEUED])
    return {
        "workflows": Workflow.objects.count(),
        "active_runs": counts[RunStatus.RUNNING] + counts[RunStatus.WAITING],
        "queued_runs": counts[RunStatus.QUEUED],
    }
