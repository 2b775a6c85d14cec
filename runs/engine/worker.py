"""What a django-q2 task does with a step: claim, execute, finish, keep going."""

from runs.engine import executors, transitions
from runs.engine.dispatch import enqueue_steps
from runs.engine.plan import plan_for
from runs.models import worker_name


def execute_step(step_run_id: int, run_id: str) -> int:
    """Run a step, then the first step it made ready, and so on: a chain costs no broker
    round trip per step. Other ready steps go to the broker for other workers.
    Returns how many steps this task executed."""
    todo = [(step_run_id, run_id)]
    executed = 0
    while todo:
        current = todo.pop()
        ready = run_one(*current)
        executed += 1
        if ready:
            todo.append(ready[0])
            enqueue_steps(ready[1:])
    return executed


def run_one(step_run_id: int, run_id: str) -> transitions.Ready:
    step = transitions.step_claim(step_run_id, run_id, worker_name())
    if step is None:
        return []  # someone else has it, it is not due yet, or the run stopped
    spec = plan_for(step.run.version).step(step.step_id)
    outcome = executors.execute(step, spec)
    return transitions.step_finish(step, outcome)
