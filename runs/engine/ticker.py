"""Periodic upkeep, run by every `trellis worker` (several tickers are safe: each action
is a guarded update)."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from runs.engine import dispatch, sql, transitions
from runs.engine.plan import plan_for
from runs.models import Run, StepRun
from runs.status import RUN_ACTIVE, RUN_NOT_STARTED, FailureReason, RunStatus, StepStatus

logger = logging.getLogger(__name__)
BATCH = 500


def tick() -> dict:
    counts = {}
    for name, action in (
        ("enqueued", enqueue_due_queued),
        ("requeued", requeue_stale),
        ("reaped", reap_expired_leases),
        ("approvals_expired", expire_approvals),
        ("runs_timed_out", time_out_runs),
        ("admitted", admit_waiting_runs),
        ("scheduled", fire_schedules),
    ):
        try:
            counts[name] = action()
        except DatabaseError as exc:  # the database is away: say so once, try next tick
            logger.warning("ticker: database unavailable (%s)", str(exc).strip()[:200])
            break
        except Exception:  # one failing chore must not stop the others
            logger.exception("ticker: %s failed", name)
    return counts


def enqueue_due_queued() -> int:
    """Queued steps that are due and were not handed to the broker: retries whose delay
    has passed, and the part of a burst `dispatch.enqueue_steps` left to the workers."""
    return _hand_out(Q(enqueued_at__isnull=True), "enqueued_at IS NULL", [])


def requeue_stale() -> int:
    """Queued steps whose task was lost (a broker that dropped it, a crash before enqueue)."""
    stale_before = timezone.now() - timedelta(seconds=settings.TRELLIS["REQUEUE_AFTER_SECONDS"])
    adapted = connection.ops.adapt_datetimefield_value(stale_before)
    return _hand_out(Q(enqueued_at__lt=stale_before), "enqueued_at < %s", [adapted])


def _hand_out(waiting: Q, guard: str, guard_params: list) -> int:
    """Hand the due queued steps matching `waiting` to the broker, a task each. The UPDATE
    checks `guard` (the same condition, in SQL) again, so that of several tickers only
    one hands each step out."""
    room = _task_room()
    if room <= 0:
        return 0
    now = timezone.now()
    due = list(
        StepRun.objects.filter(waiting, status=StepStatus.QUEUED)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .values_list("pk", flat=True)[:room]
    )
    if not due:
        return 0
    where = f"id IN ({sql.in_list(due)}) AND status = 'queued' AND {guard}"
    handed = sql.update(
        StepRun, {"enqueued_at": now}, where, [*due, *guard_params], returning="id, run_id"
    )
    dispatch.enqueue_steps([tuple(row) for row in handed], capped=False)
    return len(handed)


def _task_room() -> int:
    """How many more tasks are worth handing out: up to TRELLIS_FANOUT_TASKS waiting in
    the broker. A task that has run its step goes on with any run's queued steps (on
    PostgreSQL also one whose step was taken: worker.execute_step), so a few waiting
    tasks reach every queued step; a task per step would mostly find its step taken by
    then (a tick after a burst of 1,000 runs, 500 such tasks made the `runs` bench 2.5
    times slower)."""
    return min(settings.TRELLIS["FANOUT_TASKS"] - dispatch.pending_tasks(), BATCH)


def reap_expired_leases() -> int:
    expired = StepRun.objects.filter(
        status=StepStatus.RUNNING, lease_expires_at__lt=timezone.now()
    ).select_related(None)[:BATCH]
    count = 0
    for step in list(expired):
        logger.warning("step %s lost its worker (%s); lease expired", step, step.worker)
        dispatch.enqueue_steps(transitions.step_reap(step))
        count += 1
    return count


def expire_approvals() -> int:
    now = timezone.now()
    waiting = (
        StepRun.objects.filter(status=StepStatus.WAITING_APPROVAL)
        .select_related("run")
        .order_by("waiting_since")[:BATCH]  # the oldest first: the first to be due
    )
    count = 0
    for step in list(waiting):
        timeout = plan_for(step.run).step(step.step_id).get("timeout")
        if timeout and step.waiting_since + timedelta(seconds=timeout) <= now:
            dispatch.enqueue_steps(transitions.step_expire_approval(step))
            count += 1
    return count


def time_out_runs() -> int:
    late = Run.objects.filter(
        status__in=sorted(RUN_ACTIVE), deadline_at__lte=timezone.now()
    ).order_by(
        "deadline_at"  # the most overdue first, along run_active_deadline (not the model's order)
    )
    count = 0
    for run_id in list(late.values_list("pk", flat=True)[:BATCH]):
        try:
            transitions.run_stop(
                run_id,
                status=RunStatus.FAILED,
                reason=FailureReason.TIMEOUT,
                error="run timed out",
                grace_seconds=5,
            )
            count += 1
        except transitions.Conflict:
            pass
    return count


def admit_waiting_runs() -> int:
    now = timezone.now()
    workflow_ids = (
        Run.objects.filter(status__in=sorted(RUN_NOT_STARTED))
        .filter(Q(start_at__isnull=True) | Q(start_at__lte=now))
        .order_by()  # no default ordering: DISTINCT must be over workflow_id alone
        .values_list("workflow_id", flat=True)
        .distinct()
    )
    count = 0
    for workflow_id in list(workflow_ids):
        ready = transitions.admit_waiting(workflow_id)
        dispatch.enqueue_steps(ready)
        count += len(ready)
    return count


def fire_schedules() -> int:
    from runs.scheduler import fire_due_schedules

    return fire_due_schedules()
