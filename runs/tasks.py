"""django-q2 entry points: they take ids and call the engine."""

from runs.engine import transitions, worker
from runs.engine.dispatch import enqueue_steps


def execute_step(step_run_id: int, run_id: str) -> int:
    return worker.execute_step(step_run_id, run_id)


def admit_waiting(workflow_id: int) -> int:
    ready = transitions.admit_waiting(workflow_id)
    enqueue_steps(ready)
    return len(ready)
