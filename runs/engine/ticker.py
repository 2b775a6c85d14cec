"""Periodic upkeep, run by every `trellis worker` (several tickers are safe: each action
is a guarded update)."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from runs.engine import transitions
from runs.engine.dispatch import enqueue_steps
from runs.engine.plan import plan_for
from runs.models import Run, StepRun
from runs.status import RUN_ACTIVE, RUN_NOT_STARTED, FailureReason, RunStatus, StepStatus

logger = logging.getLogger(__name__)
BATCH = 500


def tick() -> dict:
    counts = {}
    for name, action in (
        ("retries", enqueue_due_retries),
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


def enqueue_due_retries() -> int:
    now = timezone.now()
    due = StepRun.objects.filter(
        status=StepStatus.QUEUED, not_before__lte=now, enqueued_at__isnull=True
    ).values_list("pk", "run_id")[:BATCH]
    due = list(due)
    claimed = []
    for pk, run_id in due:
        if StepRun.objects.filter(pk=pk, status=StepStatus.QUEUED, enqueued_at__isnull=True).update(
            enqueued_at=now
        ):
            claimed.append((pk, run_id))
    enqueue_steps(claimed)
    return len(claimed)


def requeue_stale() -> int:
    """Queued steps whose task was lost (a broker that dropped it, a crash before enqueue)."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TRELLIS["REQUEUE_AFTER_SECONDS"])
    stale = list(
        StepRun.objects.filter(status=StepStatus.QUEUED, enqueued_at__lt=stale_before)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .values_list("pk", "run_id")[:BATCH]
    )
    if stale:
        StepRun.objects.filter(pk__in=[pk for pk, _ in stale]).update(enqueued_at=now)
        enqueue_steps(stale)
    return len(stale)


def reap_expired_leases() -> int:
    expired = StepRun.objects.filter(
        status=StepStatus.RUNNING, lease_expires_at__lt=timezone.now()
    ).select_related(None)[:BATCH]
    count = 0
    for step in list(expired):
        logger.warning("step %s lost its worker (%s); lease expired", step, step.worker)
        enqueue_steps(transitions.step_reap(step))
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
            enqueue_steps(transitions.step_expire_approval(step))
            count += 1
    return count


def time_out_runs() -> int:
    late = Run.objects.filter(status__in=RUN_ACTIVE, deadline_at__lte=timezone.now())
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
        Run.objects.filter(status__in=RUN_NOT_STARTED)
        .filter(Q(start_at__isnull=True) | Q(start_at__lte=now))
        .order_by()  # no default ordering: DISTINCT must be over workflow_id alone
        .values_list("workflow_id", flat=True)
        .distinct()
    )
    count = 0
    for workflow_id in list(workflow_ids):
        ready = transitions.admit_waiting(workflow_id)
        enqueue_steps(ready)
        count += len(ready)
    return count


def fire_schedules() -> int:
    from runs.scheduler import fire_due_schedules

    return fire_due_schedules()
