"""Services refuse what cannot be stored before anything is written."""

import pytest

from runs import services
from runs.engine.errors import Conflict, InvalidInput
from runs.models import Run, RunEvent, StepRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(make_workflow):
    make_workflow("name: other\nsteps:\n  - {id: a, kind: noop}\n")
    return make_workflow("name: guarded\nsteps:\n  - {id: a, kind: noop}\n")


@pytest.mark.parametrize("params", [{"x": "a\x00b"}, {"x": float("nan")}, {"x": "\ud800"}])
def test_unstorable_params_are_refused(workflow, params):
    with pytest.raises(InvalidInput) as refused:
        services.run_start(workflow="guarded", params=params)
    assert refused.value.details["errors"][0]["path"] == "params.x"
    assert not Run.objects.exists()


def test_grace_must_be_a_finite_number_of_seconds(workflow):
    run, _ = services.run_start(workflow="guarded", start_at=None)
    for grace in (float("nan"), -1, 3601):
        with pytest.raises(InvalidInput):
            services.run_cancel(run_id=run.pk, grace_seconds=grace)


def test_an_idempotency_key_belongs_to_one_workflow(workflow):
    first, created = services.run_start(workflow="guarded", idempotency_key="k-1")
    again, created_again = services.run_start(workflow="guarded", idempotency_key="k-1")
    assert created and not created_again and again.pk == first.pk
    with pytest.raises(Conflict) as conflict:
        services.run_start(workflow="other", idempotency_key="k-1")
    assert conflict.value.code == "idempotency_key_reused"
    assert Run.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_key_taken_by_a_racing_start_answers_with_the_first_run(workflow, monkeypatch):
    """Two starts with one key at once: both miss the look-up, the second one's INSERT
    fails on the unique key (outside any transaction on PostgreSQL), and it answers with
    the first run, having stored nothing of its own."""
    first, _ = services.run_start(workflow="guarded", idempotency_key="k-race")
    looked_up, real = [], services.run_with_key

    def missing_at_first(key):
        looked_up.append(key)
        return real(key) if len(looked_up) > 1 else None

    monkeypatch.setattr(services, "run_with_key", missing_at_first)
    again, created = services.run_start(workflow="guarded", idempotency_key="k-race")
    assert (again.pk, created) == (first.pk, False)
    assert looked_up == ["k-race", "k-race"]
    assert Run.objects.count() == 1
    assert RunEvent.objects.exclude(run_id=first.pk).count() == 0
    assert StepRun.objects.exclude(run_id=first.pk).count() == 0


def test_ticker_admits_each_workflow_once_per_tick(workflow, monkeypatch):
    from runs.engine import ticker

    services.run_bulk_start(workflow="guarded", inputs=[{}] * 5)
    calls = []
    monkeypatch.setattr(ticker.transitions, "admit_waiting", lambda wid: calls.append(wid) or [])
    ticker.admit_waiting_runs()
    assert calls == [workflow.pk]


def test_overlap_is_about_the_workflow_not_the_global_cap(make_workflow, settings):
    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1}
    make_workflow("name: busy\nsteps:\n  - {id: a, kind: noop}\n")
    make_workflow("name: skipper\noverlap: skip\nsteps:\n  - {id: a, kind: noop}\n")
    services.run_start(workflow="busy")
    run, _ = services.run_start(workflow="skipper")
    assert run.status == "queued"  # waits for the global slot; not skipped
