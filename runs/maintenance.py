"""Writes that clean up or act on many runs: purge, delete a workflow, bulk cancel/resume."""

from collections.abc import Callable, Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import Q, Sum, TextField
from django.db.models.functions import Cast, Length
from django.utils import timezone

from runs import services
from runs.engine.errors import Conflict, EngineError, InvalidInput
from runs.models import Approval, LogChunk, Run, RunEvent, StepAttempt, StepOutput, StepRun
from runs.status import RUN_TERMINAL
from workflows.models import Workflow

DELETE_BATCH = 500
MAX_BULK_ACTION = 10_000


def delete_runs(run_ids: list[str]) -> int:
    """Delete finished runs with their steps, attempts, logs, outputs, events and approvals.

    Runs that are not finished (any more) are left alone; returns how many were deleted."""
    with transaction.atomic():
        ids = list(
            Run.objects.select_for_update()
            .filter(pk__in=run_ids, status__in=RUN_TERMINAL)
            .values_list("pk", flat=True)
        )
        if not ids:
            return 0
        LogChunk.objects.filter(step_run__run_id__in=ids).delete()
        Approval.objects.filter(step_run__run_id__in=ids).delete()
        StepAttempt.objects.filter(step_run__run_id__in=ids).delete()
        StepOutput.objects.filter(run_id__in=ids).delete()
        RunEvent.objects.filter(run_id__in=ids).delete()
        StepRun.objects.filter(run_id__in=ids).delete()
        Run.objects.filter(pk__in=ids).delete()
    return len(ids)


def stored_bytes(run_ids: list[str]) -> int:
    """An estimate of what runs hold: log text, outputs and inputs."""
    logs = LogChunk.objects.filter(step_run__run_id__in=run_ids).aggregate(n=Sum(Length("text")))
    outputs = StepOutput.objects.filter(run_id__in=run_ids).aggregate(
        n=Sum(Length(Cast("value", TextField())))
    )
    inputs = Run.objects.filter(pk__in=run_ids).aggregate(n=Sum(Length(Cast("input", TextField()))))
    return sum(part["n"] or 0 for part in (logs, outputs, inputs))


def purge_runs(*, older_than: timedelta, now=None) -> dict:
    """Delete finished runs that ended (or, never started, were created) before now - older_than."""
    if older_than < timedelta(0):
        raise InvalidInput("older_than must not be negative")
    cutoff = (now or timezone.now()) - older_than
    old = Run.objects.filter(status__in=RUN_TERMINAL).filter(
        Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
    )
    removed = freed = 0
    while True:
        # Each batch is deleted, or was resumed meanwhile and no longer matches: no loop.
        ids = list(old.values_list("pk", flat=True)[:DELETE_BATCH])
        if not ids:
            break
        freed += stored_bytes(ids)
        removed += delete_runs(ids)
    return {"removed": removed, "freed_bytes": freed}


def workflow_delete(*, name: str) -> dict:
    """Delete a workflow, its versions and its finished runs; refused while a run is open."""
    workflow = services.workflow_get(name)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        open_runs = Run.objects.filter(workflow=workflow).exclude(status__in=RUN_TERMINAL).count()
        if open_runs:
            raise Conflict(
                f"workflow {name!r} has {open_runs} unfinished run(s); cancel them first",
                code="workflow_busy",
                details={"unfinished_runs": open_runs},
            )
        ids = list(Run.objects.filter(workflow=workflow).values_list("pk", flat=True))
        for start in range(0, len(ids), DELETE_BATCH):
            delete_runs(ids[start : start + DELETE_BATCH])
        workflow.delete()
    return {"name": name, "runs_removed": len(ids)}


def runs_bulk_cancel(
    run_ids: Iterable[str], *, grace_seconds: float | None = None, wait_for_running: bool = False
) -> list[dict]:
    return _each(
        run_ids,
        lambda run_id: services.run_cancel(
            run_id=run_id, grace_seconds=grace_seconds, wait_for_running=wait_for_running
        ),
    )


def runs_bulk_resume(run_ids: Iterable[str]) -> list[dict]:
    return _each(run_ids, lambda run_id: services.run_resume(run_id=run_id))


def _each(run_ids: Iterable[str], action: Callable[[str], Run]) -> list[dict]:
    """Apply `action` to every run on its own; one refusal does not stop the others."""
    unique = list(dict.fromkeys(str(run_id) for run_id in run_ids))
    if len(unique) > MAX_BULK_ACTION:
        raise InvalidInput(
            f"at most {MAX_BULK_ACTION} runs in one bulk action, got {len(unique)}",
            code="too_many_runs",
        )
    results = []
    for run_id in unique:
        try:
            run = action(run_id)
        except EngineError as exc:
            results.append({"run_id": run_id, "ok": False, "error": exc.message, "code": exc.code})
        else:
            results.append({"run_id": run_id, "ok": True, "status": run.status})
    return results
