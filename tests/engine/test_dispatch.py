"""How queued steps reach workers: a burst gets a few broker tasks, a worker that has
drained its run takes the other runs' queued steps, and the ticker hands out what no
task has taken."""

import threading
import time
import types
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

import runs.tasks
from runs import services
from runs.engine import dispatch, sql, ticker, transitions, worker
from runs.models import Run, RunEvent, StepRun
from workflows.models import Workflow

pytestmark = pytest.mark.django_db(transaction=True)

ONE_STEP = """
name: d-one
steps:
  - {id: a, kind: noop}
"""


@pytest.fixture
def tasks(monkeypatch, no_background_worker):
    """The broker tasks sent, as (step_run_id, run_id); nothing reaches a real broker.
    Those still in the list are the broker's pending tasks: clear it to take them."""
    sent = []
    monkeypatch.setattr(dispatch, "async_task", lambda name, *args, **kw: sent.append(args))
    monkeypatch.setattr(dispatch, "pending_tasks", lambda: len(sent))
    return sent


def test_a_free_worker_takes_the_steps_no_task_will_bring_and_leaves_the_others(
    make_workflow, tasks, settings
):
    settings.TRELLIS = {**settings.TRELLIS, "FANOUT_TASKS": 1}
    make_workflow(ONE_STEP)
    posted, _ = services.run_start(workflow="d-one")
    assert len(tasks) == 1, "a run started alone, no task waiting: it gets its own task"
    burst = services.run_bulk_start(workflow="d-one", inputs=[{}] * 3)
    assert len(tasks) == 2, "the burst's other two steps are not handed out"

    executed = worker.execute_step(*tasks.pop())

    statuses = dict(Run.objects.values_list("pk", "status"))
    assert {statuses[pk] for pk in burst} == {"succeeded"}
    if connection.vendor != "postgresql":  # its look takes the oldest due step, no hint
        assert executed == 4 and statuses[posted.pk] == "succeeded"
        return
    assert executed == 3, "its own step, then the burst's two that no task will bring"
    assert statuses[posted.pk] == "running", "the older run is left to its own task"
    assert worker.execute_step(*tasks.pop()) == 1
    assert Run.objects.get(pk=posted.pk).status == "succeeded"


def test_a_run_started_while_tasks_wait_gets_none_and_the_first_free_worker_takes_it(
    make_workflow, tasks, settings
):
    """While tasks wait in Redis no worker is free, and the one that gets free first
    would find the new run's step taken by then: the step goes in not handed out. The
    worker that runs the waiting task takes it after its own. The ORM broker (SQLite) is
    not asked: that would be a query in every start."""
    make_workflow(ONE_STEP)
    first, _ = services.run_start(workflow="d-one")
    second, _ = services.run_start(workflow="d-one")

    if not settings.Q_CLUSTER.get("redis"):
        assert [run_id for _, run_id in tasks] == [first.pk, second.pk], "a task each"
        return
    assert tasks == [(StepRun.objects.get(run=first).pk, first.pk)], "no task for the second"
    step = StepRun.objects.get(run=second)
    assert (step.status, step.enqueued_at) == ("queued", None), "marked not handed out"

    assert worker.execute_step(*tasks.pop()) == 2, "the waiting task's step, then the other"
    assert Run.objects.get(pk=second.pk).status == "succeeded"


def test_a_run_started_while_tasks_wait_is_handed_out_by_the_ticker_if_no_worker_came(
    make_workflow, tasks, settings
):
    if not settings.Q_CLUSTER.get("redis"):
        pytest.skip("the ORM broker is not asked whether tasks wait (test above)")
    make_workflow(ONE_STEP)
    services.run_start(workflow="d-one")
    second, _ = services.run_start(workflow="d-one")
    tasks.clear()  # the waiting task was taken, and its worker is busy elsewhere

    assert ticker.enqueue_due_queued() == 1
    assert tasks == [(StepRun.objects.get(run=second).pk, second.pk)]


def test_a_free_worker_takes_a_step_whose_task_is_late(make_workflow, tasks):
    """Handed out longer ago than sql.LATE_TASK_SECONDS and still queued: its task was
    lost (a broker restart) or waits behind a backlog, so a worker that is free takes it."""
    make_workflow(ONE_STEP)
    first, _ = services.run_start(workflow="d-one")
    late, _ = services.run_start(workflow="d-one")
    StepRun.objects.filter(run=late).update(
        enqueued_at=timezone.now() - timedelta(seconds=sql.LATE_TASK_SECONDS + 5)
    )

    assert worker.execute_step(*tasks[0]) == 2, "its own step, then the late one"
    assert Run.objects.get(pk=late.pk).status == "succeeded"


def test_a_burst_gets_at_most_fanout_tasks_and_the_ticker_hands_out_the_rest(
    make_workflow, tasks, settings
):
    settings.TRELLIS = {**settings.TRELLIS, "FANOUT_TASKS": 2}
    make_workflow(ONE_STEP)

    run_ids = services.run_bulk_start(workflow="d-one", inputs=[{}] * 5)

    assert len(tasks) == 2
    steps = StepRun.objects.filter(run_id__in=run_ids)
    assert steps.filter(status="queued").count() == 5
    left = set(steps.filter(enqueued_at__isnull=True).values_list("pk", "run_id"))
    assert len(left) == 3, "the rest is not handed out"

    assert ticker.enqueue_due_queued() == 0, "two tasks are still waiting in the broker"
    tasks.clear()  # the workers took them
    assert ticker.enqueue_due_queued() == 2, "no more than FANOUT_TASKS waiting at once"
    handed = set(tasks)
    tasks.clear()
    assert ticker.enqueue_due_queued() == 1
    assert handed | set(tasks) == left
    assert not steps.filter(enqueued_at__isnull=True).exists()
    tasks.clear()
    assert ticker.enqueue_due_queued() == 0, "each step is handed out once"


def test_a_task_whose_step_was_taken_goes_on_with_another_runs_step(make_workflow, tasks):
    make_workflow(ONE_STEP)
    taken = services.run_start(workflow="d-one")[0]
    other = services.run_start(workflow="d-one")[0]
    assert transitions.step_claim(taken.pk, "another-worker"), "another worker took it"

    executed = worker.execute_step(*tasks[0])

    assert StepRun.objects.get(run=taken).status == "running", "left to its worker"
    if connection.vendor == "postgresql":
        assert executed == 1, "the task is the hint that there is work"
        assert Run.objects.get(pk=other.pk).status == "succeeded"
    else:  # every look for work takes SQLite's write lock; the other worker is looking
        assert executed == 0
        assert Run.objects.get(pk=other.pk).status == "running"


def claim_next_while_held(held_runs: list[Run], hint: str | None = None) -> list[StepRun]:
    """step_claim_next while another connection holds the row locks of `held_runs`."""
    held, release = threading.Event(), threading.Event()

    def other_workers():
        try:
            with transaction.atomic():
                list(Run.objects.select_for_update().filter(pk__in=[r.pk for r in held_runs]))
                held.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=other_workers)
    holder.start()
    try:
        assert held.wait(10)
        return transitions.step_claim_next("free-worker", hint)
    finally:
        release.set()
        holder.join()


@pytest.mark.parametrize("hinted", [False, True], ids=["looking", "hinted"])
def test_a_free_worker_passes_over_a_run_another_worker_holds(make_workflow, tasks, hinted):
    """Whether it looks for the oldest due run or tries the run its last finish saw
    (Finished.hint), a worker never waits for a run another worker holds."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: no run is held while another is taken")
    make_workflow(ONE_STEP)
    held_run = services.run_start(workflow="d-one")[0]
    free_run = services.run_start(workflow="d-one")[0]

    claimed = claim_next_while_held([held_run], hint=held_run.pk if hinted else None)

    assert [step.run_id for step in claimed] == [free_run.pk], "the held run is skipped"
    assert transitions.step_claim_next("free-worker")[0].run_id == held_run.pk


def test_a_free_worker_finds_a_free_run_behind_many_held_ones(make_workflow, tasks):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: no run is held while another is taken")
    make_workflow(ONE_STEP)
    runs = [services.run_start(workflow="d-one")[0] for _ in range(40)]

    claimed = claim_next_while_held(runs[:39])

    assert [step.run_id for step in claimed] == [runs[39].pk]


def test_a_step_whose_task_was_lost_is_handed_out_again_once(make_workflow, tasks, settings):
    make_workflow(ONE_STEP)
    run = services.run_start(workflow="d-one")[0]
    step = StepRun.objects.get(run=run)
    tasks.clear()  # the broker lost it
    lost_at = timezone.now() - timedelta(seconds=settings.TRELLIS["REQUEUE_AFTER_SECONDS"] + 1)
    StepRun.objects.filter(pk=step.pk).update(enqueued_at=lost_at)

    assert ticker.requeue_stale() == 1
    assert tasks == [(step.pk, run.pk)]
    assert ticker.requeue_stale() == 0, "a second ticker finds it handed out already"
    assert worker.execute_step(*tasks[0]) == 1


def test_a_finished_run_hands_its_slot_to_a_waiting_run_of_its_workflow(make_workflow, tasks):
    """The look for the workflow's waiting runs travels with the finishing transaction's
    writes. On PostgreSQL the worker that freed the slot admits the waiting run itself;
    on SQLite an admission task does it (inline, it took the write lock from the web's
    starts). Either way the admitted run's step is handed out, to its own task."""
    make_workflow("name: d-limited\nmax_active_runs: 1\nsteps:\n  - {id: a, kind: noop}\n")
    first = services.run_start(workflow="d-limited")[0]
    waiting = services.run_start(workflow="d-limited")[0]
    assert (first.status, waiting.status) == ("running", "queued")
    assert tasks == [(StepRun.objects.get(run=first).pk, first.pk)]

    assert worker.execute_step(*tasks.pop()) == 1

    assert Run.objects.get(pk=first.pk).status == "succeeded"
    if connection.vendor != "postgresql":
        assert tasks == [(waiting.workflow_id,)], "one admission task"
        tasks.clear()
        runs.tasks.admit_waiting(waiting.workflow_id)  # what the admission task runs
    assert Run.objects.get(pk=waiting.pk).status == "running"
    step = StepRun.objects.get(run=waiting)
    assert tasks == [(step.pk, waiting.pk)], "a task for the admitted run's step only"
    assert worker.execute_step(*tasks.pop()) == 1
    assert tasks == [], "nothing waits any more: no admission task"
    first, waiting = Run.objects.get(pk=first.pk), Run.objects.get(pk=waiting.pk)
    assert waiting.status == "succeeded"
    assert waiting.started_at >= first.finished_at, "never two at once"


def event_trail(run: Run) -> list[tuple]:
    events = RunEvent.objects.filter(run=run).order_by("seq")
    return list(events.values_list("seq", "type", "step_id", "status"))


def test_the_worker_that_frees_a_slot_under_the_global_cap_runs_the_waiting_run_itself(
    make_workflow, tasks, settings
):
    """Past TRELLIS_MAX_CONCURRENT_RUNS new runs wait. On PostgreSQL the worker whose run
    ends starts the oldest waiting run of its workflow and runs its root steps itself: no
    broker task for it. On SQLite an admission task starts it (the web's starts need the
    write lock), and its step goes to the broker."""
    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1}
    make_workflow(ONE_STEP)
    first = services.run_start(workflow="d-one")[0]
    waiting = [services.run_start(workflow="d-one")[0] for _ in range(2)]
    assert [run.status for run in waiting] == ["queued", "queued"]

    executed = worker.execute_step(*tasks.pop())

    statuses = {run.pk: Run.objects.get(pk=run.pk).status for run in [first, *waiting]}
    if connection.vendor != "postgresql":
        assert executed == 1
        assert tasks == [(first.workflow_id,)], "one admission task"
        return
    assert executed == 3, "its own run, then each waiting run as the one before ended"
    assert tasks == [], "no broker task for a run the worker took"
    assert set(statuses.values()) == {"succeeded"}
    assert event_trail(waiting[0]) == [
        (1, "run.status", "", "queued"),
        (2, "run.status", "", "running"),
        (3, "step.status", "a", "queued"),
        (4, "step.status", "a", "running"),
        (5, "step.status", "a", "succeeded"),
        (6, "run.status", "", "succeeded"),
    ]
    step = StepRun.objects.get(run=waiting[0])
    attempts = list(step.attempts.values_list("number", "status", "worker"))
    assert attempts == [(1, "succeeded", step.worker)] and step.worker
    assert Run.objects.get(pk=waiting[0].pk).event_seq == 6
    ordered = [Run.objects.get(pk=run.pk) for run in [first, *waiting]]
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert after.started_at >= before.finished_at, "never two at once"


def test_a_taken_waiting_run_of_many_roots_runs_its_no_ops_as_one_batch(
    make_workflow, tasks, settings
):
    if connection.vendor != "postgresql":
        pytest.skip("on SQLite an admission task starts waiting runs (test above)")
    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1, "BATCH_STEPS": 2}
    make_workflow(ONE_STEP)
    make_workflow(
        "name: d-roots\nsteps:\n  - {id: a, kind: noop}\n  - {id: b, kind: noop}\n"
        "  - {id: c, kind: noop}\n  - {id: d, kind: noop, depends_on: [a, b, c]}\n"
    )
    one = services.run_start(workflow="d-one")[0]
    roots = services.run_start(workflow="d-roots")[0]
    assert (one.status, roots.status) == ("running", "queued")

    ready, claimed = transitions.admit_waiting_claiming(roots.workflow_id, "w1")

    assert ready == [], "the cap is full: nothing starts"
    assert claimed == []
    Run.objects.filter(pk=one.pk).update(status="succeeded")
    ready, claimed = transitions.admit_waiting_claiming(roots.workflow_id, "w1")
    assert [step.step_id for step in claimed] == ["a", "b"], "a batch of BATCH_STEPS"
    steps = dict(StepRun.objects.filter(run=roots).values_list("step_id", "status"))
    assert steps == {"a": "running", "b": "running", "c": "queued", "d": "pending"}
    assert ready == [(StepRun.objects.get(run=roots, step_id="c").pk, roots.pk)]
    assert StepRun.objects.get(run=roots, step_id="a").worker == "w1"


def test_a_waiting_run_gated_by_an_approval_is_started_and_not_taken(
    make_workflow, tasks, settings
):
    """A waiting run whose first step is an approval is started by start_run: the worker
    takes none of its steps, and the run waits for the decision."""
    if connection.vendor != "postgresql":
        pytest.skip("on SQLite an admission task starts waiting runs")
    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1}
    make_workflow(ONE_STEP)
    make_workflow(
        "name: d-gate\nsteps:\n  - {id: gate, kind: approval}\n"
        "  - {id: a, kind: noop, depends_on: [gate]}\n"
    )
    services.run_start(workflow="d-one")
    gated = services.run_start(workflow="d-gate")[0]
    assert gated.status == "queued"
    Run.objects.exclude(pk=gated.pk).update(status="succeeded")

    ready, claimed = transitions.admit_waiting_claiming(gated.workflow_id, "w1")

    assert claimed == [] and ready == []
    gated = Run.objects.get(pk=gated.pk)
    assert gated.status == "waiting", "its approval step waits for a decision"


def test_an_admission_that_fails_midway_leaves_the_runs_waiting_and_no_transaction_open(
    make_workflow, tasks, settings, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("on SQLite an admission task starts waiting runs")
    from psycopg.pq import TransactionStatus

    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1}
    make_workflow(ONE_STEP)
    first = services.run_start(workflow="d-one")[0]
    waiting = services.run_start(workflow="d-one")[0]
    Run.objects.filter(pk=first.pk).update(status="succeeded")

    def broken(*args):
        raise RuntimeError("between BEGIN and COMMIT")

    monkeypatch.setattr(transitions, "_claim_new_rows", broken)
    assert transitions.admit_waiting_claiming(waiting.workflow_id, "w1") == ([], [])

    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert Run.objects.get(pk=waiting.pk).status == "queued"
    assert not StepRun.objects.filter(run=waiting).exists()
    monkeypatch.undo()
    ready, claimed = transitions.admit_waiting_claiming(waiting.workflow_id, "w1")
    assert [step.run_id for step in claimed] == [waiting.pk]


def test_two_admissions_at_once_count_each_others_runs(make_workflow, tasks, settings):
    """Two workers freeing slots at once: the second admission waits for the workflow
    row the first holds, then counts the run the first started, so the cap holds."""
    if connection.vendor != "postgresql":
        pytest.skip("on SQLite an admission task starts waiting runs")
    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1}
    make_workflow(ONE_STEP)
    first = services.run_start(workflow="d-one")[0]
    waiting = [services.run_start(workflow="d-one")[0] for _ in range(2)]
    Run.objects.filter(pk=first.pk).update(status="succeeded")
    holding = threading.Event()

    def other_worker():  # an admission of the first waiting run, still uncommitted
        try:
            with transaction.atomic():
                Workflow.objects.select_for_update().get(pk=first.workflow_id)
                Run.objects.filter(pk=waiting[0].pk).update(status="running")
                holding.set()
                time.sleep(0.5)
        finally:
            connection.close()

    other = threading.Thread(target=other_worker)
    other.start()
    assert holding.wait(10)
    admitted = transitions.admit_waiting_claiming(first.workflow_id, "w1")
    other.join()

    assert admitted == ([], []), "the slot was taken by the other admission"
    assert Run.objects.filter(status="running").count() == 1
    assert Run.objects.get(pk=waiting[1].pk).status == "queued"


def test_a_stopping_worker_finishes_its_step_and_takes_no_more(make_workflow, tasks, monkeypatch):
    make_workflow(
        "name: d-chain\nsteps:\n  - {id: a, kind: noop}\n  - {id: b, kind: noop, depends_on: [a]}\n"
    )
    make_workflow(ONE_STEP)
    chain = services.run_start(workflow="d-chain")[0]
    first_task = tasks.pop()  # a worker took it from the broker
    other = services.run_start(workflow="d-one")[0]
    late_task = tasks.pop()
    flag = types.SimpleNamespace(value=0)
    monkeypatch.setattr(worker, "stopping", flag)
    real_run_batch = worker.run_batch

    def stop_while_running(batch):
        flag.value = 1  # `trellis worker` got SIGTERM while this step ran
        return real_run_batch(batch)

    monkeypatch.setattr(worker, "run_batch", stop_while_running)

    assert worker.execute_step(*first_task) == 1, "its own step only: no chain, no stealing"
    steps = dict(StepRun.objects.filter(run=chain).values_list("step_id", "status"))
    assert steps == {"a": "succeeded", "b": "queued"}
    assert tasks == [(StepRun.objects.get(run=chain, step_id="b").pk, chain.pk)], "to the broker"

    # A task the stopping cluster still had in hand claims nothing: its step waits, marked
    # not handed out, for the next worker.
    assert worker.execute_step(*late_task) == 0
    step = StepRun.objects.get(run=other)
    assert (step.status, step.enqueued_at) == ("queued", None)
