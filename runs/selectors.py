"""Reads of runs shaped for the API and the CLI."""

from django.db.models import Count, Q, QuerySet

from runs.models import LogChunk, Run, StepRun
from runs.status import RUN_NOT_STARTED


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
    steps = list(
        StepRun.objects.filter(run=run)
        .annotate(attempt_count=Count("attempts"))
        .order_by("position")
    )
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
            "attempts": s.attempt_count if s.kind != "approval" else s.attempt,
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
