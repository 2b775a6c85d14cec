"""What a django-q2 task does with a step: claim, execute, finish, keep going.

A task drains its run: after finishing a step it claims the next ready (or queued) step
of the same run in the same transaction and runs it, so a chain costs no broker round
trip per step. Other newly ready steps go to the broker as hints for other workers; a
hint whose step was already taken simply claims the next queued step or ends.
"""

from django.conf import settings

from runs.engine import executors, transitions
from runs.engine.dispatch import enqueue_steps
from runs.engine.plan import plan_for
from runs.models import worker_name


def execute_step(step_run_id: int | None, run_id: str) -> int:
    """Returns how many steps this task executed."""
    worker = worker_name()
    step = transitions.step_claim(run_id, worker, step_run_id)
    executed = 0
    while step is not None:
        spec = plan_for(step.run).step(step.step_id)
        outcome = executors.execute(step, spec)
        executed += 1
        ready, step = transitions.step_finish(step, outcome, worker=worker)
        enqueue_steps(ready[: settings.TRELLIS["FANOUT_TASKS"]])
    return executed
