"""django-q2 entry points: they take ids and call the engine."""

from runs.engine import transitions, worker
from runs.engine.dispatch import enqueue_steps


def execute_step(step_run_id: int, run_id: str) -> int:
    return worker.execute_step(step_run_id, run_id)


def admit_waiting(workflow_id: int) -> int:
    # Admission now happens where a run ends (transitions._after_run_finished); this entry
    # point stays for tasks an earlier version left in a broker.
    ready = transitions.admit_waiting(workflow_id)
    enqueue_steps(ready)
    return len(ready)
