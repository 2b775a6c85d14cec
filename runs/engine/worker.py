"""What a django-q2 task does: claim steps of a run, execute them, finish them, repeat.

A task drains its run: when it finishes steps it claims the next ready (or queued) steps
of the same run in the same transaction and runs them, so a chain costs no broker round
trip per step. No-op steps are claimed and finished in batches. When the run ends and
runs of its workflow wait for the slot it freed, the task starts the next and runs it.
Other newly ready steps go to the broker as hints for other workers; a hint whose step
was already taken claims the next queued step of the run. A task that has drained its
run goes on with the oldest due queued step of any run, until none is left.

When the cluster is asked to stop, a task finishes the steps it holds and takes no more:
their next steps go to the broker, for whichever worker runs next.
"""

import contextlib
import multiprocessing
import threading

from django.conf import settings
from django.db import connection
from django.utils import timezone

from runs.engine import executors, transitions
from runs.engine.dispatch import enqueue_steps, mark_not_handed_out
from runs.engine.plan import plan_for
from runs.models import Run, StepRun, worker_name

# Set to 1 by `trellis worker` when it is asked to stop; shared memory made before the
# cluster forks its workers, so they all see it. Lock-free: a worker killed while reading
# it cannot block the stop. None outside a cluster.
stopping = None


def watch_for_stop():
    """The flag that tells this process's future workers to stop taking work."""
    global stopping
    stopping = multiprocessing.get_context("fork").RawValue("b", 0)
    return stopping


def stop_requested() -> bool:
    return stopping is not None and stopping.value == 1


def execute_step(step_run_id: int | None, run_id: str) -> int:
    """Returns how many steps this task executed."""
    if stop_requested():
        # Delivered after the stop (the cluster had it in hand): the step stays for the
        # next worker, which the ticker hands it to.
        if step_run_id is not None:
            mark_not_handed_out([step_run_id])
        return 0
    worker = worker_name()
    try:
        claimed = transitions.step_claim(run_id, worker, step_run_id)
    except Run.DoesNotExist:  # purged, or rolled back, since the task was sent
        return 0
    executed, last = drain(claimed, worker)
    # Then the queued steps of other runs that no broker task will bring: a burst of
    # ready steps gets only a few tasks (dispatch.enqueue_steps, the ticker), and a worker
    # that is free now needs no broker hop. The last finish read whether there are any
    # (`other_work`); a step just handed to the broker is left to its own task, which
    # would otherwise find it taken and have made its round trips for nothing. One whose
    # task is late (a second: lost with the broker, or behind a backlog) is taken. On PostgreSQL
    # also when this task's own step was already taken: the task is the hint that there
    # is work, whichever step it names. On SQLite every look takes the database's write
    # lock, and another worker is stealing already (POST /runs under load there: 155-173
    # requests/s with those looks, 261-297 without).
    while (
        (executed or connection.vendor == "postgresql")
        and last.other_work
        and not stop_requested()
        and (batch := transitions.step_claim_next(worker, last.hint))
    ):
        more, last = drain(batch, worker)
        executed += more
    return executed


def drain(batch: list[StepRun], worker: str) -> tuple[int, transitions.Finished]:
    """Execute and finish claimed steps of one run, claiming its next ones, until none of
    it is left to take. Returns how many steps ran, and the last finish, which says
    whether other runs have steps no task will bring (`other_work`, `hint`)."""
    executed, finished = 0, transitions.Finished([], [])  # nothing read yet: may be work
    while batch:
        results = run_batch(batch)
        executed += len(results)
        claim_for = "" if stop_requested() else worker  # stopping: all ready go to the broker
        finished = transitions.steps_finish(results, worker=claim_for)
        enqueue_steps(finished.ready)
        batch = finished.claimed
        if finished.runs_waiting:  # the run ended, freeing a slot: take the next one
            ready, batch = transitions.admit_waiting_claiming(finished.workflow_id, claim_for)
            enqueue_steps(ready)
    return executed, finished


def run_batch(batch: list[StepRun]) -> list[tuple[StepRun, transitions.Outcome]]:
    plan = plan_for(batch[0].run)
    results = []
    # A single step renews its own lease while it runs (executors); a batch's later steps
    # need theirs renewed while the earlier ones run.
    leases = _BatchLeases(batch) if len(batch) > 1 else None
    with leases or contextlib.nullcontext():
        for step in batch:
            step.started_at = timezone.now()  # the claim time may be earlier in a batch
            results.append((step, executors.execute(step, plan.step(step.step_id))))
            step.finished_at = timezone.now()
            if leases:
                leases.done(step)
    return results


class _BatchLeases(threading.Thread):
    """Renews the leases of a batch's steps that have not run yet."""

    def __init__(self, batch: list[StepRun]):
        super().__init__(daemon=True)
        self.waiting = {step.pk: step for step in batch[1:]}
        self.stop = threading.Event()

    def done(self, step: StepRun) -> None:
        self.waiting.pop(step.pk, None)

    def __enter__(self):
        if self.waiting:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()

    def run(self) -> None:
        interval = settings.TRELLIS["LEASE_SECONDS"] / 3
        try:
            while not self.stop.wait(interval) and self.waiting:
                transitions.renew_leases(list(self.waiting.values()))
        finally:
            connection.close()
