"""Cron schedules with a frozen clock: `fire_due_schedules(now=…)`."""

from datetime import UTC, datetime

import pytest

from runs.models import Run
from runs.scheduler import fire_due_schedules
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def hourly(make_workflow, catchup):
    return make_workflow(
        f"""
name: hourly-{catchup}
schedule: {{cron: "0 * * * *", timezone: UTC, catchup: {catchup}, input: {{source: cron}}}}
steps:
  - {{id: tick, kind: noop}}
"""
    )


def test_first_pass_only_plans_the_next_tick(make_workflow):
    wf = hourly(make_workflow, "latest")
    assert fire_due_schedules(now=T0) == 0
    wf.refresh_from_db()
    assert wf.next_run_at == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize("catchup, expected", [("all", 3), ("latest", 1), ("none", 0)])
def test_catchup_after_three_missed_ticks(make_workflow, catchup, expected):
    wf = hourly(make_workflow, catchup)
    fire_due_schedules(now=T0)
    later = datetime(2026, 1, 1, 3, 30, tzinfo=UTC)  # ticks 01:00, 02:00, 03:00 missed
    assert fire_due_schedules(now=later) == expected
    runs = Run.objects.filter(workflow=wf).order_by("logical_date")
    assert runs.count() == expected
    if expected:
        assert runs.last().logical_date == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
        assert runs.last().trigger == "schedule"
        assert runs.last().input == {"source": "cron"}
    wf.refresh_from_db()
    assert wf.next_run_at == datetime(2026, 1, 1, 4, 0, tzinfo=UTC)


def test_a_tick_fires_once_even_when_asked_twice(make_workflow):
    wf = hourly(make_workflow, "latest")
    fire_due_schedules(now=T0)
    at = datetime(2026, 1, 1, 1, 0, 5, tzinfo=UTC)
    assert fire_due_schedules(now=at) == 1
    assert fire_due_schedules(now=at) == 0
    assert Run.objects.filter(workflow=wf).count() == 1


def test_paused_and_disabled_schedules_do_not_fire(make_workflow):
    wf = hourly(make_workflow, "all")
    Workflow.objects.filter(pk=wf.pk).update(is_paused=True)
    make_workflow(
        """
name: disabled
schedule: {cron: "* * * * *", enabled: false}
steps:
  - {id: tick, kind: noop}
"""
    )
    fire_due_schedules(now=T0)
    assert fire_due_schedules(now=datetime(2026, 1, 2, tzinfo=UTC)) == 0
    assert not Run.objects.exists()


def test_latest_after_a_long_outage_is_the_latest_tick(make_workflow):
    wf = hourly(make_workflow, "latest")
    fire_due_schedules(now=T0)
    much_later = datetime(2026, 4, 1, 12, 30, tzinfo=UTC)  # ~2,150 ticks missed
    assert fire_due_schedules(now=much_later) == 1
    assert Run.objects.get(workflow=wf).logical_date == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
