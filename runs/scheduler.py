"""Cron schedules: each due tick of a workflow's `schedule` starts one run."""

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from django.utils import timezone

from runs.engine.errors import EngineError
from runs.status import Trigger
from workflows.models import Workflow

MAX_CATCHUP_RUNS = 1000
logger = logging.getLogger(__name__)


def schedule_of(workflow: Workflow) -> dict | None:
    schedule = workflow.definition.get("schedule")
    if isinstance(schedule, str):
        schedule = {"cron": schedule}
    if not schedule or schedule.get("enabled") is False:
        return None
    return schedule


def next_tick(schedule: dict, after: datetime) -> datetime:
    tz = ZoneInfo(schedule.get("timezone", "UTC"))
    return croniter(schedule["cron"], after.astimezone(tz)).get_next(datetime)


def previous_tick(schedule: dict, before: datetime) -> datetime:
    """The latest tick t <= before."""
    tz = ZoneInfo(schedule.get("timezone", "UTC"))
    after = (before + timedelta(microseconds=1)).astimezone(tz)
    return croniter(schedule["cron"], after).get_prev(datetime)


def ticks_between(schedule: dict, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Ticks t with start <= t <= end."""
    tz = ZoneInfo(schedule.get("timezone", "UTC"))
    it = croniter(schedule["cron"], (start - timedelta(microseconds=1)).astimezone(tz))
    ticks = []
    while len(ticks) < limit:
        tick = it.get_next(datetime)
        if tick > end:
            break
        ticks.append(tick)
    return ticks


def fire_due_schedules(now: datetime | None = None) -> int:
    from runs.services import run_start

    now = now or timezone.now()
    started = 0
    for workflow in Workflow.objects.filter(is_paused=False, definition__has_key="schedule"):
        schedule = schedule_of(workflow)
        if schedule is None:
            continue
        if workflow.next_run_at is None:
            Workflow.objects.filter(pk=workflow.pk, next_run_at=None).update(
                next_run_at=next_tick(schedule, now)
            )
            continue
        if workflow.next_run_at > now:
            continue
        catchup = schedule.get("catchup", "latest")
        if catchup == "all":
            due = ticks_between(schedule, workflow.next_run_at, now, MAX_CATCHUP_RUNS)
        else:  # the latest tick only; with `none`, only if it is not stale
            due = [previous_tick(schedule, now)]
            if catchup == "none" and now - due[0] >= timedelta(minutes=1):
                due = []
        following = next_tick(schedule, now)
        # Only the ticker that moves next_run_at fires the ticks (several may run).
        if not Workflow.objects.filter(pk=workflow.pk, next_run_at=workflow.next_run_at).update(
            next_run_at=following, last_scheduled_at=now
        ):
            continue
        for tick in due:
            try:
                run_start(
                    workflow=workflow,
                    input=dict(schedule.get("input") or {}),
                    trigger=Trigger.SCHEDULE,
                    logical_date=tick,
                )
                started += 1
            except EngineError as exc:  # e.g. a schedule input the schema refuses
                logger.warning("schedule of %s at %s not started: %s", workflow, tick, exc)
    return started
