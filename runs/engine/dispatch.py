"""Hand queued steps to django-q2 workers. One broker object per process (SPEC §8)."""

from django_q.brokers import get_broker
from django_q.tasks import async_task

_broker = None


def broker():
    global _broker
    if _broker is None:
        _broker = get_broker()
    return _broker


def enqueue_steps(steps: list[tuple[int, str]]) -> None:
    """`steps` are (step_run_id, run_id) pairs; a step delivered twice runs once (claim CAS)."""
    for step_run_id, run_id in steps:
        async_task("runs.tasks.execute_step", step_run_id, run_id, broker=broker())


def enqueue_admission(workflow_id: int) -> None:
    async_task("runs.tasks.admit_waiting", workflow_id, broker=broker())
