"""Run services: what the API, CLI, admin and scheduler call to change runs.

Each validates, calls the engine's transitions, and hands ready steps to workers only
after the transaction commits.
"""

from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from runs.engine import sql, transitions
from runs.engine.dispatch import enqueue_steps, tasks_waiting
from runs.engine.errors import Conflict, InvalidInput, NotFound
from runs.engine.plan import plan_for
from runs.models import Run, RunEvent, StepRun, new_run_id
from runs.status import RunStatus, Trigger
from workflows.definitions import unstorable, validate_input
from workflows.models import Workflow

MAX_BULK = 100_000
BULK_RUN_COLUMNS = [
    "id",
    "workflow_id",
    "version_id",
    "dag_hash",
    "status",
    "trigger",
    "created_by_id",
    "input",
    "params",
    "created_at",
    "reason",
    "error",
    "event_seq",
]


def workflow_get(name_or_workflow) -> Workflow:
    if isinstance(name_or_workflow, Workflow):
        return name_or_workflow
    workflow = sql.workflow_by_name(str(name_or_workflow))
    if workflow is None:
        raise NotFound(f"no workflow named {name_or_workflow!r}", code="workflow_not_found")
    return workflow


def run_get(run_id: str) -> Run:
    run = Run.objects.select_related("workflow", "version").filter(pk=str(run_id)).first()
    if run is None:
        raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
    return run


def check_input(workflow: Workflow, value) -> dict:
    if value is None:
        value = {}
    errors = validate_input(workflow.definition.get("input_schema"), value)
    if errors:
        raise InvalidInput(
            f"input does not match the schema of {workflow.name}: "
            + "; ".join(f"{e['path']}: {e['message']}" for e in errors),
            details={"errors": errors},
        )
    return value


def run_start(
    *,
    workflow,
    input: dict | None = None,
    params: dict | None = None,
    trigger: str = Trigger.API,
    user=None,
    start_at: datetime | None = None,
    logical_date: datetime | None = None,
    idempotency_key: str | None = None,
) -> tuple[Run, bool]:
    """Start one run; returns (run, created). The same idempotency_key returns the first run."""
    workflow = workflow_get(workflow)
    if idempotency_key:
        existing = run_with_key(idempotency_key)
        if existing is not None:
            return _same_workflow(existing, workflow, idempotency_key), False
    value = check_input(workflow, input)
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("params must be an object")
    problem = unstorable(params, "params") if params else None
    if problem:
        raise InvalidInput(
            f"{problem[0]}: {problem[1]}",
            details={"errors": [{"path": problem[0], "message": problem[1]}]},
        )
    scheduled = start_at is not None and start_at > timezone.now()
    run = _new_run(workflow, value, params, trigger, user, start_at, logical_date, idempotency_key)
    # While tasks wait in the broker no worker is free: the first that is takes the new
    # run's steps without a task of their own (dispatch.tasks_waiting).
    hand_out = scheduled or not tasks_waiting()
    try:
        if _start_needs_transaction(workflow, run):
            with transaction.atomic():
                if workflow.definition.get("max_active_runs"):
                    # Serialise starts of this workflow so its active runs count right.
                    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
                ready = transitions.admit_new_run(
                    workflow, run, scheduled=scheduled, hand_out=hand_out
                )
                transaction.on_commit(lambda: enqueue_steps(ready))
        else:
            # No lock to count under: the count read with the workflow is as good.
            active_runs = getattr(workflow, "active_runs_read", None)
            enqueue_steps(
                transitions.admit_new_run(
                    workflow, run, scheduled=scheduled, active_runs=active_runs, hand_out=hand_out
                )
            )
    except IntegrityError:
        existing = run_with_key(idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _same_workflow(existing, workflow, idempotency_key), False
    return run, True


def run_with_key(idempotency_key: str) -> Run | None:
    return Run.objects.filter(idempotency_key=idempotency_key).first()


def _start_needs_transaction(workflow, run: Run) -> bool:
    """Whether admitting a new run takes more than its one INSERT round trip to be
    atomic. On PostgreSQL, with no `max_active_runs` to serialise and no approval gate at
    the root, admission is a count of active runs (read without a lock even inside a
    transaction, so the global cap is the same soft limit either way) and one execute of
    the run's INSERTs, a transaction of its own: BEGIN and COMMIT would be two more round
    trips. SQLite's IMMEDIATE transaction is what makes its count exact."""
    return (
        connection.vendor != "postgresql"
        or connection.in_atomic_block
        or bool(workflow.definition.get("max_active_runs"))
        or not plan_for(run).starts_fresh
    )


def _same_workflow(run: Run, workflow: Workflow, key: str) -> Run:
    if run.workflow_id != workflow.pk:
        raise Conflict(
            f"idempotency_key {key!r} was used for a run of another workflow",
            code="idempotency_key_reused",
            details={"run_id": run.pk},
        )
    return run


def _new_run(workflow, value, params, trigger, user, start_at, logical_date, key) -> Run:
    version = workflow.current_version
    return Run(
        workflow=workflow,
        version=version,
        dag_hash=version.dag_hash,
        trigger=trigger,
        created_by=user if user and user.is_authenticated else None,
        input=value,
        params=params or {},
        start_at=start_at,
        logical_date=logical_date,
        idempotency_key=key or None,
    )


def run_bulk_start(*, workflow, inputs: list, trigger: str = Trigger.BULK, user=None) -> list[str]:
    """Validate every input first; one bad input creates nothing and names its index."""
    workflow = workflow_get(workflow)
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list")
    if len(inputs) > MAX_BULK:
        raise InvalidInput(
            f"at most {MAX_BULK} inputs in one bulk request, got {len(inputs)}",
            code="too_many_inputs",
        )
    schema = workflow.definition.get("input_schema")
    for index, value in enumerate(inputs):
        errors = validate_input(schema, value)
        if errors:
            raise InvalidInput(
                f"input #{index} is invalid: {errors[0]['path']}: {errors[0]['message']}",
                details={"index": index, "errors": errors},
            )
    version = workflow.current_version
    user_id = user.pk if user and user.is_authenticated else None
    now = timezone.now()
    # Rows as tuples through plain INSERTs: 200,000 model instances for 100,000 runs cost
    # far more than the database does. created_at keeps the inputs' order (admission
    # starts the oldest first).
    runs = [
        (new_run_id(), workflow.pk, version.pk, version.dag_hash, RunStatus.QUEUED, trigger)
        + (user_id, value, {}, now + timedelta(microseconds=index), "", "", 1)
        for index, value in enumerate(inputs)
    ]
    queued = [
        (run[0], 1, "run.status", "", RunStatus.QUEUED, {"trigger": trigger}, now) for run in runs
    ]
    with transaction.atomic():
        sql.insert_many(Run, BULK_RUN_COLUMNS, runs)
        sql.insert_many(RunEvent, sql.EVENT_NAMES, queued)
        run_ids = [run[0] for run in runs]
        workflow_id = workflow.pk
        transaction.on_commit(lambda: enqueue_steps(transitions.admit_waiting(workflow_id)))
    return run_ids


def run_cancel(
    *, run_id: str, grace_seconds: float | None = None, wait_for_running: bool = False
) -> Run:
    run_get(run_id)
    if grace_seconds is not None and not (0 <= grace_seconds <= 3600):  # NaN fails too
        raise InvalidInput("grace_seconds must be between 0 and 3600")
    return transitions.run_stop(
        run_id, grace_seconds=grace_seconds, wait_for_running=wait_for_running
    )


def run_resume(*, run_id: str) -> Run:
    run_get(run_id)
    return transitions.run_resume(run_id)


def run_rerun(*, run_id: str, from_step: str, dry_run: bool = False) -> Run | list[str]:
    run = run_get(run_id)
    if dry_run:
        return transitions.rerun_plan(run, from_step)
    return transitions.run_rerun(run_id, from_step)


def step_approve(*, run_id: str, step_id: str, user, comment: str = "") -> StepRun:
    return _decide(run_id, step_id, user, True, comment)


def step_reject(*, run_id: str, step_id: str, user, comment: str = "") -> StepRun:
    return _decide(run_id, step_id, user, False, comment)


def _decide(run_id, step_id, user, approve, comment) -> StepRun:
    run_get(run_id)
    ready = transitions.step_decide(
        run_id, step_id, user=user, approve=approve, comment=comment or ""
    )
    enqueue_steps(ready)
    return StepRun.objects.get(run_id=run_id, step_id=step_id)
