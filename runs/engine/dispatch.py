"""Hand queued steps to django-q2 workers. One broker object per process (SPEC §8).

Handing out comes after the steps are stored, so a broker that fails then loses nothing:
the steps stay queued and marked not handed out, the ticker hands them out when the
broker is back, and the caller (a POST, a finishing step) carries on.
"""

import logging

from django.conf import settings
from django_q.brokers import get_broker
from django_q.tasks import async_task

from runs.engine import sql
from runs.models import StepRun

logger = logging.getLogger(__name__)
_broker = None


def broker():
    global _broker
    if _broker is None:
        _broker = get_broker()
    return _broker


def enqueue_steps(steps: list[tuple[int, str]], *, capped: bool = True) -> None:
    """`steps` are (step_run_id, run_id) pairs; a step delivered twice runs once (claim CAS).

    At most TRELLIS_FANOUT_TASKS tasks per call: each task, once its own run is drained,
    takes the other runs' queued steps (worker.execute_step), so a burst of 100 admitted
    runs costs a few broker hops, not 100. The steps beyond that are marked not handed
    out (`enqueued_at` NULL); the ticker hands out those still queued a tick later, so
    a large cluster's other workers are not left idle. `capped=False`: a task per step."""
    limit = settings.TRELLIS["FANOUT_TASKS"] if capped else len(steps)
    for sent, (step_run_id, run_id) in enumerate(steps[:limit]):
        try:
            async_task("runs.tasks.execute_step", step_run_id, run_id, broker=broker())
        except Exception:  # the broker's own errors differ by broker: Redis, the ORM
            logger.exception("broker unavailable: %d steps wait for the ticker", len(steps))
            limit = sent
            break
    mark_not_handed_out([step_run_id for step_run_id, _ in steps[limit:]])


def mark_not_handed_out(step_run_ids: list[int]) -> None:
    """Queued steps no task will take: the ticker hands them out at its next tick."""
    if step_run_ids:
        where = f"id IN ({sql.in_list(step_run_ids)}) AND status = 'queued'"
        sql.update(StepRun, {"enqueued_at": None}, where, step_run_ids)


def pending_tasks() -> int:
    """Tasks waiting in the broker, not yet taken by a worker."""
    return broker().queue_size()


def tasks_waiting() -> bool:
    """Whether tasks wait in the broker, so that no worker is free to take a new one at
    once: a run started then gets no task (`hand_out=False`). The first worker to be free
    takes its steps anyway, told by its last finish that steps no task will bring wait
    (transitions.Finished.other_work), and a task would only find them taken then; if no
    worker does, the ticker hands them out. A broker that cannot answer says no: the
    steps then go to it, and if it fails, to the ticker.

    Asked of Redis only, where it is one LLEN. The ORM broker would count in the
    database, in every start: POST /runs on SQLite fell from 369 to 290 requests/s."""
    if not settings.Q_CLUSTER.get("redis"):
        return False
    try:
        return pending_tasks() > 0
    except Exception:  # the broker's own errors differ by broker: Redis, the ORM
        return False


def enqueue_admission(workflow_id: int) -> None:
    try:
        async_task("runs.tasks.admit_waiting", workflow_id, broker=broker())
    except Exception:  # the ticker admits waiting runs at every tick anyway
        logger.exception("broker unavailable: workflow %s's waiting runs wait", workflow_id)
