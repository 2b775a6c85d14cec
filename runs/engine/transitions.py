"""Every state change of runs and step runs, in one place.

Each transition runs inside `locked_run` (the run row locked), moves rows with a guarded
UPDATE (`... WHERE status = <expected>`), and records RunEvent rows in the same
transaction. A transition that finds the row already moved does nothing, so a task
delivered twice, or two workers racing, is harmless.
"""

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import Error, connection, transaction
from django.db.models import Q
from django.utils import timezone

from runs.engine import sql
from runs.engine.errors import Conflict, Forbidden, NotFound
from runs.engine.events import RunTx, locked_run
from runs.engine.plan import Plan, plan_for, retry_delay, retry_policy
from runs.models import Approval, Run, RunEvent, StepAttempt, StepOutput, StepRun
from runs.status import (
    RUN_ACTIVE,
    RUN_NOT_STARTED,
    RUN_RESUMABLE,
    RUN_TERMINAL,
    FailureReason,
    RunStatus,
    StepStatus,
)
from workflows.definitions import step_kind
from workflows.models import Workflow

logger = logging.getLogger(__name__)

Ready = list[tuple[int, str]]  # (step_run_id, run_id) pairs to hand to workers


@dataclass
class Finished:
    """What `steps_finish` did: the steps to hand to other workers, the run's next steps
    claimed for the worker, and when it claimed none, the read (sent with the commit) of
    whether a due queued step waits that no broker task will bring, or whose task is
    late (sql.unhanded_due_read)."""

    ready: Ready
    claimed: list[StepRun]
    unhanded: sql.Read | None = None
    # The run ended and the worker admits its workflow's waiting runs itself: whether
    # any wait (sql.waiting_runs_read, sent with the commit).
    waiting: sql.Read | None = None
    workflow_id: int | None = None

    @property
    def other_work(self) -> bool:
        """Whether to look for other runs' steps: when nothing was read, maybe."""
        return self.unhanded is None or bool(self.unhanded.rows)

    @property
    def hint(self) -> str | None:
        """The run of a step that read found, for the worker to try first."""
        return self.unhanded.rows[0][0] if self.unhanded and self.unhanded.rows else None

    @property
    def runs_waiting(self) -> bool:
        return self.waiting is not None and bool(self.waiting.rows)


@dataclass(slots=True)
class StepState:
    """The few columns of a step run that scheduling decisions need (cheap to load)."""

    pk: int
    run_id: str
    step_id: str
    kind: str
    status: str
    continue_on_failure: bool
    not_before: object
    attempt: int
    max_attempts: int
    waiting_since: object


def step_states(run_id: str) -> list[StepState]:
    return [StepState(*row) for row in sql.step_state_rows(run_id)]


def _states_of(tx: RunTx) -> list[StepState]:
    """The states read together with the run's lock (`locked_run(with_states=True)`)."""
    return [StepState(*row) for row in tx.state_rows]


def lease_seconds() -> float:
    return settings.TRELLIS["LEASE_SECONDS"]


@dataclass
class Outcome:
    ok: bool
    outputs: dict = field(default_factory=dict)
    row_count: int | None = None
    reason: str = ""
    error: str = ""
    exit_code: int | None = None
    retryable: bool = True


# --- admission ---------------------------------------------------------------------------


def free_slots(workflow: Workflow, active_runs: int | None = None) -> tuple[int, int]:
    """(slots under the workflow's max_active_runs, slots under the global cap), the
    latter from `active_runs` when the caller has just read that count."""
    cap = settings.TRELLIS["MAX_CONCURRENT_RUNS"]
    global_free = cap - (sql.count_active_runs() if active_runs is None else active_runs)
    limit = workflow.definition.get("max_active_runs")
    if not limit:
        return UNLIMITED, global_free
    return limit - sql.count_active_runs(workflow.pk), global_free


UNLIMITED = 10**9


def admit_new_run(
    workflow: Workflow,
    run: Run,
    *,
    scheduled: bool = False,
    active_runs: int | None = None,
    hand_out: bool = True,
) -> Ready:
    """Insert a new run (built, not saved) in its first state: running with its root
    steps queued when a slot is free, else queued, skipped or replacing the oldest run,
    per `overlap`. With `max_active_runs` the caller holds the workflow row lock.
    `active_runs`: the count of active runs, if the caller read it already.
    `hand_out=False`: the root steps go in marked not handed out (dispatch.tasks_waiting),
    and the caller sends them no task."""
    now = run.created_at = timezone.now()
    if scheduled:
        return _insert_waiting(run, RunStatus.SCHEDULED)
    workflow_free, global_free = free_slots(workflow, active_runs)
    if workflow_free <= 0:
        overlap = workflow.definition.get("overlap", "queue")
        if overlap == "skip":
            run.finished_at, run.duration_ms = now, 0
            run.reason, run.error = FailureReason.SKIPPED_OVERLAP, "max_active_runs reached"
            return _insert_waiting(run, RunStatus.CANCELLED, reason=run.reason)
        if overlap == "cancel_running":
            _cancel_oldest_active(workflow, count=1 - workflow_free)
            workflow_free, global_free = free_slots(workflow)
    if workflow_free <= 0 or global_free <= 0:
        return _insert_waiting(run, RunStatus.QUEUED)
    plan = plan_for(run)
    if not plan.starts_fresh:
        _insert_waiting(run, RunStatus.PENDING)
        return start_run(run.pk)
    rows, events = _begin_fresh(run, plan, now, hand_out=hand_out)
    sql.insert_run(run, rows, [_event_row(event) for event in events])
    return [(row.pk, run.pk) for row in rows if row.status == StepStatus.QUEUED and hand_out]


def _event_row(event: RunEvent) -> tuple:
    return tuple(getattr(event, name) for name in sql.EVENT_NAMES)


def _insert_waiting(run: Run, status: str, **data) -> Ready:
    run.status, run.event_seq = status, 1
    event = (run.pk, 1, "run.status", "", status, {"trigger": run.trigger, **data}, run.created_at)
    sql.insert_run(run, [], [event])
    return []


def _begin_fresh(
    run: Run, plan: Plan, now, *, hand_out: bool = True
) -> tuple[list[StepRun], list[RunEvent]]:
    """Make a run that has no step rows yet start now: set its fields, and return its
    step rows (roots queued; with `hand_out` False marked not handed out) and events for
    the caller to insert."""
    timeout = plan.definition.get("timeout")
    run.status, run.started_at = RunStatus.RUNNING, now
    run.deadline_at = now + timedelta(seconds=timeout) if timeout else None
    rows = _new_step_rows(run, plan)
    seq = run.event_seq
    events = [
        RunEvent(
            run_id=run.pk,
            seq=seq + 1,
            type="run.status",
            status=RunStatus.RUNNING,
            data={"trigger": run.trigger},
            created_at=now,
        )
    ]
    for row in rows:
        if row.step_id in plan.roots:
            row.status, row.enqueued_at = StepStatus.QUEUED, now if hand_out else None
            events.append(
                RunEvent(
                    run_id=run.pk,
                    seq=seq + len(events) + 1,
                    type="step.status",
                    step_id=row.step_id,
                    status=StepStatus.QUEUED,
                    created_at=now,
                )
            )
    run.event_seq = seq + len(events)
    return rows, events


def admit_waiting(workflow_id: int) -> Ready:
    """Start the oldest waiting runs of a workflow that fit in the free slots, together:
    runs with no step rows yet take a few statements in all, not a transaction each."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
        now = timezone.now()  # read under the lock: a run that just ended did so before
        slots = min(free_slots(workflow))
        if slots <= 0:
            return []
        waiting = list(
            Run.objects.filter(workflow=workflow, status__in=sorted(RUN_NOT_STARTED))
            .filter(Q(start_at__isnull=True) | Q(start_at__lte=now))
            .order_by("created_at")
            .values_list("pk", flat=True)[:slots]
        )
        runs = list(
            Run.objects.select_for_update().filter(pk__in=waiting, status__in=RUN_NOT_STARTED)
        )
        with_steps = set(
            StepRun.objects.filter(run_id__in=waiting).values_list("run_id", flat=True)
        )
        fresh = [r for r in runs if r.pk not in with_steps and plan_for(r).starts_fresh]
        ready = _start_fresh(fresh, now)
        for run in runs:
            if run not in fresh:
                ready += start_run(run.pk)
    return ready


def _start_fresh(runs: list[Run], now) -> Ready:
    writes, rows, _ = _fresh_start_writes(runs, now)
    sql.insert_steps(rows, after=writes)
    return [(row.pk, row.run_id) for row in rows if row.status == StepStatus.QUEUED]


def _fresh_start_writes(
    runs: list[Run], now, claim_for: str = ""
) -> tuple[list, list[StepRun], list[StepRun]]:
    """What starts locked runs that have no step rows yet (`_begin_fresh`): the runs'
    UPDATEs, one per (deadline, events added), and their events' INSERTs, for
    `sql.insert_steps` to send before the step rows. With `claim_for`, the first run's
    root steps go in claimed for that worker. Returns (writes, step rows, claimed)."""
    rows, events, groups, claimed = [], [], {}, []
    for run in runs:
        before = run.event_seq
        run_rows, run_events = _begin_fresh(run, plan_for(run), now)
        if claim_for and not claimed:
            claimed = _claim_new_rows(run, run_rows, run_events, claim_for, now)
        rows += run_rows
        events += [_event_row(event) for event in run_events]
        groups.setdefault((run.deadline_at, run.event_seq - before), []).append(run.pk)
    writes = [
        sql.update_statement(
            Run,
            {
                "status": RunStatus.RUNNING,
                "started_at": now,
                "deadline_at": deadline,
                "event_seq": sql.Raw(f"event_seq + {int(added)}"),
            },
            f"id IN ({sql.in_list(ids)})",
            ids,
        )
        for (deadline, added), ids in groups.items()
    ]
    writes += sql.insert_statements(RunEvent, sql.EVENT_NAMES, events)
    return writes, rows, claimed


def admit_waiting_claiming(workflow_id: int, worker: str) -> tuple[Ready, list[StepRun]]:
    """Called by the worker whose run just ended, freeing a slot, when runs of the
    workflow wait (PostgreSQL): start the oldest that fit and claim the first one's root
    steps for `worker`, which runs them next. Two round trips, and the run it takes
    needs no broker task. Under a load the workers cannot keep up with, most runs wait
    at the global cap and start this way: before, each cost an admission of about ten
    statements, a broker hop and a claim. Returns (steps for the broker, steps claimed).

    A workflow with max_active_runs goes through admit_waiting, and runs that are not
    fresh (with step rows already, or an approval first) through start_run. On a
    failure the runs stay waiting: the ticker admits them."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return admit_waiting(workflow_id), []
    try:
        admitted = _admit_fresh_claiming(workflow_id, worker)
        if admitted is None:
            return admit_waiting(workflow_id), []
    except Exception:
        logger.exception("admitting the waiting runs of workflow %s failed", workflow_id)
        return [], []
    ready, claimed, others = admitted
    for run_id in others:  # after the commit: whatever happens, the claimed steps run
        try:
            ready += start_run(run_id)
        except Exception:
            logger.exception("starting the waiting run %s failed", run_id)
    return ready, claimed


def _admit_fresh_claiming(workflow_id: int, worker: str):
    """admit_waiting_claiming's transaction, opened with a BEGIN of its own: the workflow
    row locked, as admit_waiting does (so two workers freeing slots at once count each
    other's admissions), and the runs that fit locked with it. Returns None when the
    workflow limits its active runs, else (steps for the broker, steps claimed, ids of
    the runs locked that are not fresh)."""
    now = timezone.now()
    connection.ensure_connection()
    try:
        limited, candidates = sql.begin_admission(workflow_id, now)
        if limited:
            sql.rollback()
            return None
        fresh = [run for run, steps in candidates if not steps and plan_for(run).starts_fresh]
        writes, rows, claimed = _fresh_start_writes(fresh, now, claim_for=worker)
        sql.insert_steps(rows, after=writes, commit=True)
    except BaseException:
        with contextlib.suppress(Error):
            sql.rollback()
        raise
    ready = [(row.pk, row.run_id) for row in rows if row.status == StepStatus.QUEUED]
    return ready, claimed, [run.pk for run, _ in candidates if run not in fresh]


def _claim_new_rows(run: Run, rows: list[StepRun], events: list, worker: str, now) -> list:
    """Claim a new run's queued root steps (`_pick_batch`) for `worker` before they are
    inserted: their rows go in running, after their queued event."""
    batch = _pick_batch([row for row in rows if row.status == StepStatus.QUEUED])
    lease_until = now + timedelta(seconds=lease_seconds())
    for row in batch:
        row.status, row.attempt, row.started_at = StepStatus.RUNNING, 1, now
        row.lease_expires_at, row.worker = lease_until, worker
        run.event_seq += 1
        events.append(
            RunEvent(
                run_id=run.pk,
                seq=run.event_seq,
                type="step.status",
                step_id=row.step_id,
                status=StepStatus.RUNNING,
                data={"attempt": 1},
                created_at=now,
            )
        )
    return batch


def _cancel_oldest_active(workflow: Workflow, count: int) -> None:
    oldest = Run.objects.filter(workflow=workflow, status__in=RUN_ACTIVE).order_by("created_at")
    for run_id in list(oldest.values_list("pk", flat=True)[:count]):
        run_stop(run_id, reason="overlap_cancel", error="cancelled by a newer run (overlap)")


def start_run(run_id: str) -> Ready:
    """pending/queued/scheduled -> running: create step rows if needed, queue root steps."""
    with locked_run(run_id) as tx:
        now = timezone.now()
        run = tx.run
        if run.status not in RUN_NOT_STARTED:
            return []
        plan = plan_for(run)
        steps = step_states(run_id)
        if not steps:
            StepRun.objects.bulk_create(_new_step_rows(run, plan))
            steps = step_states(run_id)
        timeout = plan.definition.get("timeout")
        tx.set_run(
            started_at=run.started_at or now,
            deadline_at=now + timedelta(seconds=timeout) if timeout else None,
        )
        tx.run_status(RunStatus.RUNNING)
        return advance(tx, steps, plan)


def _new_step_rows(run: Run, plan: Plan) -> list[StepRun]:
    rows = []
    for position, step_id in enumerate(plan.order):
        spec = plan.step(step_id)
        rows.append(
            StepRun(
                run=run,
                step_id=step_id,
                kind=step_kind(spec),
                position=position,
                max_attempts=retry_policy(spec)["max_attempts"],
                continue_on_failure=bool(spec.get("continue_on_failure")),
            )
        )
    return rows


# --- moving steps forward ----------------------------------------------------------------


def _dependency_state(step: StepState, by_id: dict[str, StepState], plan: Plan) -> str:
    """'ready', 'blocked' (can never run) or 'waiting'."""
    state = "ready"
    for dep in plan.graph[step.step_id]:
        upstream = by_id[dep]
        if upstream.status == StepStatus.SUCCEEDED:
            continue
        if upstream.status == StepStatus.FAILED and upstream.continue_on_failure:
            continue
        if upstream.status in (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
            return "blocked"
        state = "waiting"
    return state


def advance(tx: RunTx, steps: list[StepState], plan: Plan) -> Ready:
    """Queue every pending step whose upstream is done, skip those that can never run,
    then settle the run's status. Called with the run locked, so this decides fan-in once."""
    ready, _ = _advance(tx, steps, plan, claim_for="")
    return ready


def _advance(tx: RunTx, steps: list[StepState], plan: Plan, claim_for: str):
    """`advance`, and with `claim_for` the first newly ready steps go straight to running
    for that worker. Returns (ready steps for other workers, the claimed steps)."""
    if tx.run.status in RUN_TERMINAL:
        return [], []
    by_id = {step.step_id: step for step in steps}
    now = timezone.now()
    changes: dict[str, list[StepState]] = {
        StepStatus.QUEUED: [],
        StepStatus.WAITING_APPROVAL: [],
        StepStatus.SKIPPED: [],
    }
    changed = True
    while changed:  # skips cascade down the graph
        changed = False
        for step in steps:
            if step.status != StepStatus.PENDING:
                continue
            state = _dependency_state(step, by_id, plan)
            if state == "waiting":
                continue
            if state == "blocked":
                new = StepStatus.SKIPPED
            elif step.kind == "approval":
                new = StepStatus.WAITING_APPROVAL
            else:
                new = StepStatus.QUEUED
            step.status = new
            changes[new].append(step)
            changed = True
    claimed = []
    if claim_for:
        batch = _pick_batch(changes[StepStatus.QUEUED])
        for step in batch:
            changes[StepStatus.QUEUED].remove(step)
            tx.step_status(step.step_id, StepStatus.QUEUED)
        claimed = _claim_batch(tx, batch, claim_for, from_status=StepStatus.PENDING)
    _apply_step_changes(tx, changes, now)
    _settle_run(tx, steps, now)
    return [(step.pk, tx.run.pk) for step in changes[StepStatus.QUEUED]], claimed


def _apply_step_changes(tx: RunTx, changes: dict[str, list[StepState]], now) -> None:
    queued, waiting, skipped = (
        changes[StepStatus.QUEUED],
        changes[StepStatus.WAITING_APPROVAL],
        changes[StepStatus.SKIPPED],
    )
    if queued:
        _update_steps(tx, queued, status=StepStatus.QUEUED, enqueued_at=now, not_before=None)
    if waiting:
        _update_steps(
            tx,
            waiting,
            status=StepStatus.WAITING_APPROVAL,
            waiting_since=now,
            started_at=now,
            attempt=sql.Raw("attempt + 1"),
        )
    if skipped:
        _update_steps(
            tx,
            skipped,
            status=StepStatus.SKIPPED,
            reason=FailureReason.UPSTREAM_FAILED,
            finished_at=now,
        )
    for status, rows in changes.items():
        for step in rows:
            tx.step_status(step.step_id, status)


def _update_steps(tx: RunTx, steps: list[StepState], **fields) -> None:
    ids = [s.pk for s in steps]
    tx.write([sql.update_statement(StepRun, fields, f"id IN ({sql.in_list(ids)})", ids)])


def _settle_run(tx: RunTx, steps: list[StepState], now) -> None:
    statuses = [step.status for step in steps]
    open_steps = [
        s
        for s in statuses
        if s
        not in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)
    ]
    if open_steps:
        busy = any(s in (StepStatus.QUEUED, StepStatus.RUNNING) for s in open_steps)
        target = RunStatus.RUNNING if busy else RunStatus.WAITING
        if StepStatus.WAITING_APPROVAL not in open_steps:
            target = RunStatus.RUNNING
        if tx.run.status != target:
            tx.run_status(target)
        return
    if tx.run.cancel_requested_at is not None:
        _finish_run(tx, RunStatus.CANCELLED, FailureReason.CANCELLED, "", now)
        return
    hard_failures = [
        s
        for s in steps
        if s.status != StepStatus.SUCCEEDED
        and not (s.status == StepStatus.FAILED and s.continue_on_failure)
    ]
    if hard_failures:
        final, reason = RunStatus.FAILED, "step_failed"
        failed = next((s for s in hard_failures if s.status == StepStatus.FAILED), hard_failures[0])
        error = f"step {failed.step_id!r} {failed.status}"
    elif any(s.status == StepStatus.FAILED for s in steps):
        final, reason, error = RunStatus.PARTIALLY_SUCCEEDED, "continue_on_failure", ""
    else:
        final, reason, error = RunStatus.SUCCEEDED, "", ""
    _finish_run(tx, final, reason, error, now)


def _finish_run(tx: RunTx, status: str, reason: str, error: str, now) -> None:
    started = tx.run.started_at or now
    tx.set_run(
        finished_at=now,
        duration_ms=int((now - started).total_seconds() * 1000),
        reason=reason,
        error=error,
    )
    tx.run_status(status, reason=reason) if reason else tx.run_status(status)
    # Another run of this workflow may be waiting for the slot just freed: asked with the
    # transaction's writes, rather than in a round trip of its own after it.
    workflow_id = tx.run.workflow_id
    waiting = tx.read_at_end(sql.waiting_runs_read(workflow_id))
    if tx.admits_itself:
        tx.waiting = waiting
    else:
        tx.after_commit.append(lambda: _after_run_finished(workflow_id, waiting))


def _after_run_finished(workflow_id: int, waiting: sql.Read) -> None:
    """Give the slot just freed to the workflow's oldest waiting run. On PostgreSQL here
    and now, in the process that freed it: an admission task cost a broker hop and a task
    per finished run (POST under load: 235-294 against 294-338 requests/s), and a burst
    of them left workers admitting nothing for seconds afterwards. On SQLite a task: the
    admission takes the database's one write lock, and done inline by every finishing
    worker it took the lock from the web's starts (POST 187-302 against 294-411)."""
    from runs.engine.dispatch import enqueue_admission, enqueue_steps

    if not waiting.rows:
        return
    if connection.vendor != "postgresql":
        enqueue_admission(workflow_id)
        return
    try:
        enqueue_steps(admit_waiting(workflow_id))
    except Exception:  # after the commit, nothing to undo; the ticker admits at every tick
        logger.exception("admitting the waiting runs of workflow %s failed", workflow_id)


# --- step execution ----------------------------------------------------------------------


# Steps with no side effects that finish at once; a python step may take a while, so it
# is claimed alone and its siblings stay free for other workers.
BATCHABLE_KINDS = frozenset({"noop", "respond"})


def batch_limit() -> int:
    return settings.TRELLIS["BATCH_STEPS"]


def step_claim(run_id: str, worker: str, step_run_id: int | None = None) -> list[StepRun]:
    """queued -> running for one worker: the hinted step if it is still queued, else the
    next due queued steps of the run (a batch when they run in-process)."""
    with locked_run(run_id, with_states=True) as tx:
        if tx.run.status not in RUN_ACTIVE:
            return []
        now = timezone.now()
        due = [s for s in _states_of(tx) if _is_due(s, now)]
        due.sort(key=lambda s: s.pk != step_run_id)  # the hinted step first, if still due
        return _claim_batch(tx, _pick_batch(due), worker, StepStatus.QUEUED)


def step_claim_next(worker: str, hint: str | None = None) -> list[StepRun]:
    """The due queued steps of the run `hint` if no other worker is holding it (the run
    of a step no task will bring, read by the worker's last finish: Finished.hint), else
    the oldest due queued step of any active run no other worker is holding; claimed
    for `worker` (a batch when they run in-process): how a worker that has drained its
    own run goes on without a broker task. SQLite takes no hint: there a miss (the other
    worker took the step) costs another transaction under the write lock, and its look
    is a cheap join (the `runs` bench: 319-354 runs/s with hints, 372 without)."""
    now = timezone.now()
    if hint is not None and connection.vendor == "postgresql":
        with locked_run(hint, with_states=True, skip_locked=True) as tx:
            claimed = _claim_due(tx, worker, now)
        if claimed:
            return claimed
    with locked_run(None, with_states=True, due_at=now) as tx:
        return _claim_due(tx, worker, now)


def _claim_due(tx: RunTx, worker: str, now) -> list[StepRun]:
    if tx.run is None or tx.run.status not in RUN_ACTIVE:
        return []
    due = [s for s in _states_of(tx) if _is_due(s, now)]
    return _claim_batch(tx, _pick_batch(due), worker, StepStatus.QUEUED)


def _is_due(step: StepState, now) -> bool:
    return step.status == StepStatus.QUEUED and (step.not_before is None or step.not_before <= now)


def _pick_batch(candidates: list[StepState]) -> list[StepState]:
    """One step, or up to `batch_limit()` no-op steps: those finish in microseconds, so
    claiming and finishing them together saves a transaction per step."""
    if not candidates:
        return []
    if candidates[0].kind not in BATCHABLE_KINDS:
        return candidates[:1]
    return [s for s in candidates if s.kind in BATCHABLE_KINDS][: batch_limit()]


def _claim_batch(tx: RunTx, steps: list[StepState], worker: str, from_status: str) -> list[StepRun]:
    """Start an attempt of each step; the caller holds the run lock. An attempt's row is
    written when the attempt ends, by whoever moves the step out of running."""
    if not steps:
        return []
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease_seconds())
    ids = [s.pk for s in steps]
    claim = {
        "status": StepStatus.RUNNING,
        "attempt": sql.Raw("attempt + 1"),
        "started_at": now,
        "finished_at": None,
        "lease_expires_at": lease_until,
        "worker": worker,
    }
    where = f"id IN ({sql.in_list(ids)}) AND status = %s"
    tx.write([sql.update_statement(StepRun, claim, where, [*ids, from_status])])
    claimed = []
    for step in steps:
        step.status = StepStatus.RUNNING
        claimed.append(
            StepRun(
                pk=step.pk,
                run=tx.run,
                step_id=step.step_id,
                kind=step.kind,
                status=StepStatus.RUNNING,
                attempt=step.attempt + 1,
                max_attempts=step.max_attempts,
                started_at=now,
                lease_expires_at=lease_until,
                worker=worker,
                continue_on_failure=step.continue_on_failure,
            )
        )
        tx.step_status(step.step_id, StepStatus.RUNNING, attempt=step.attempt + 1)
    if tx.run.status != RunStatus.RUNNING:
        tx.run_status(RunStatus.RUNNING)
    return claimed


def step_finish(step: StepRun, outcome: Outcome, *, lease_expired: bool = False) -> Ready:
    return steps_finish([(step, outcome)], lease_expired=lease_expired).ready


def steps_finish(
    results: list[tuple[StepRun, Outcome]], *, lease_expired: bool = False, worker: str = ""
) -> Finished:
    """running -> succeeded | failed | queued (retry) for steps of one run, then queue
    what became ready.

    With `worker`, also claim the next steps of the run for that worker in the same
    transaction (newly ready ones first), so a chain costs one transaction per step; when
    there are none, read with the commit whether other runs have steps no task will
    bring, or whose task is late (`Finished.other_work`), so that a worker looks for
    them only when there are: a step just handed to the broker gets its own task."""
    now = timezone.now()
    run_id = results[0][0].run_id
    with locked_run(run_id, with_states=not lease_expired) as tx:
        tx.admits_itself = bool(worker) and connection.vendor == "postgresql"
        plan = plan_for(tx.run)
        if lease_expired:
            # A lease is renewed without the run lock, so only the guarded UPDATE can
            # tell whether it has really expired: finish first, then read the states.
            finished = [
                (step, outcome)
                for step, outcome in results
                if _finish_one(tx, plan, step, outcome, now, lease_expired=True)
            ]
            steps = step_states(run_id)
        else:
            # Every status change holds the run lock, so the states read with it say which
            # attempts still run: their guarded UPDATEs go with the transaction's writes.
            steps = _states_of(tx)
            by_pk = {state.pk: state for state in steps}
            finished = [
                (step, outcome)
                for step, outcome in results
                if _still_running(by_pk.get(step.pk), step)
            ]
            plain = []
            if len(finished) > 1:
                plain = [
                    (s, o) for s, o in finished if o.ok and not o.outputs and o.row_count is None
                ]
            _finish_plain_successes(tx, [s for s, _ in plain], now)
            together = {id(step) for step, _ in plain}
            for step, outcome in finished:
                if id(step) not in together:
                    _finish_one(tx, plan, step, outcome, now, state=by_pk[step.pk])
                else:
                    by_pk[step.pk].status = StepStatus.SUCCEEDED
        attempts = [_attempt_row(step, outcome, now) for step, outcome in finished]
        outputs = [
            row
            for step, outcome in finished
            if outcome.ok and outcome.outputs
            for row in _output_rows(step, outcome.outputs)
        ]
        tx.write(sql.insert_statements(StepAttempt, sql.ATTEMPT_NAMES, attempts))
        # A step that runs again had its outputs removed when it was reset (_reset_steps).
        tx.write(sql.insert_statements(StepOutput, sql.OUTPUT_NAMES, outputs))
        if not finished or tx.run.status in RUN_TERMINAL:
            return Finished([], [])
        ready, claimed = _advance(tx, steps, plan, claim_for=worker)
        if not claimed and worker and tx.run.status in RUN_ACTIVE:
            due = [s for s in steps if _is_due(s, now)]
            claimed = _claim_batch(tx, _pick_batch(due), worker, StepStatus.QUEUED)
        unhanded = None
        if worker and not claimed:
            unhanded = tx.read_at_end(sql.unhanded_due_read(now))
        taken = {c.pk for c in claimed}
        ready = [r for r in ready if r[0] not in taken]
        return Finished(ready, claimed, unhanded, tx.waiting, tx.run.workflow_id)


def _still_running(state: StepState | None, step: StepRun) -> bool:
    """Whether this attempt of the step is still the running one (not cancelled, reaped,
    or finished by a duplicate delivery)."""
    return (
        state is not None and state.status == StepStatus.RUNNING and state.attempt == step.attempt
    )


def _finish_plain_successes(tx: RunTx, steps: list[StepRun], now) -> None:
    """Succeed a batch of running steps that produced nothing (no-ops) in one UPDATE."""
    if not steps:
        return
    rows = []
    for step in steps:
        finished = step.finished_at or now
        started = step.started_at or finished
        duration = int((finished - started).total_seconds() * 1000)
        rows.append((step.pk, step.attempt, started, finished, duration))
        tx.step_status(step.step_id, StepStatus.SUCCEEDED, attempt=step.attempt)
    tx.write([sql.succeed_steps_statement(rows)])


def _finish_one(
    tx: RunTx,
    plan: Plan,
    step: StepRun,
    outcome: Outcome,
    now,
    *,
    lease_expired: bool = False,
    state: StepState | None = None,
) -> bool:
    """Guarded update of one finished attempt. With `state` (read under the run lock) it
    is known to succeed and goes with the transaction's writes, and `state` is updated;
    else it runs now, and False means someone else moved the step (cancelled, or reaped
    after its lease expired: that transition kept the attempt)."""
    guard, params = "id = %s AND status = %s AND attempt = %s", [step.pk, "running", step.attempt]
    if lease_expired:
        guard += " AND lease_expires_at < %s"
        params.append(connection.ops.adapt_datetimefield_value(now))
    retry = (
        not outcome.ok
        and outcome.retryable
        and step.attempt < step.max_attempts
        and tx.run.status in RUN_ACTIVE
        and tx.run.cancel_requested_at is None
    )
    fields = {
        "status": StepStatus.SUCCEEDED if outcome.ok else StepStatus.FAILED,
        "lease_expires_at": None,
        "exit_code": outcome.exit_code,
        "reason": outcome.reason,
        "error": outcome.error[-10_000:],
        "started_at": step.started_at,
    }
    event = {"attempt": step.attempt}
    if retry:
        delay = retry_delay(plan.step(step.step_id), step.attempt)
        fields.update(
            status=StepStatus.QUEUED, not_before=now + timedelta(seconds=delay), enqueued_at=None
        )
        event["retry_at"] = fields["not_before"].isoformat()
    else:
        finished = step.finished_at or now
        started = step.started_at or finished
        fields.update(
            finished_at=finished,
            duration_ms=int((finished - started).total_seconds() * 1000),
            row_count=outcome.row_count,
        )
    if state is not None:
        tx.write([sql.update_statement(StepRun, fields, guard, params)])
        state.status, state.not_before = fields["status"], fields.get("not_before")
    elif sql.update(StepRun, fields, guard, params) != 1:
        return False
    if outcome.reason:
        event["reason"] = outcome.reason
    tx.step_status(step.step_id, fields["status"], **event)
    return True


def _attempt_row(step: StepRun, outcome: Outcome, now) -> tuple:
    """A StepAttempt row, in the order of sql.ATTEMPT_NAMES."""
    return (
        step.pk,
        step.attempt,
        StepStatus.SUCCEEDED if outcome.ok else StepStatus.FAILED,
        step.started_at or now,
        step.finished_at or now,
        outcome.exit_code,
        outcome.reason,
        outcome.error[-10_000:],
        step.worker,
    )


def _output_rows(step, outputs: dict) -> list[tuple]:
    """StepOutput rows, in the order of sql.OUTPUT_NAMES."""
    by_key = {str(key)[:200]: value for key, value in outputs.items()}  # keys fit the column
    return [(step.run_id, step.pk, key, value) for key, value in by_key.items()]


def step_renew_lease(step: StepRun) -> bool:
    """Heartbeat; False means the step is no longer ours (cancelled or reaped)."""
    until = timezone.now() + timedelta(seconds=lease_seconds())
    return (
        StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempt=step.attempt).update(
            lease_expires_at=until
        )
        == 1
    )


def renew_leases(steps: list[StepRun]) -> None:
    """Keep the leases of steps a worker has claimed but not started yet (a batch)."""
    until = timezone.now() + timedelta(seconds=lease_seconds())
    ours = Q()
    for step in steps:
        ours |= Q(pk=step.pk, attempt=step.attempt)
    StepRun.objects.filter(ours, status=StepStatus.RUNNING).update(lease_expires_at=until)


def step_reap(step: StepRun) -> Ready:
    """A running step whose lease expired: its worker is gone. Retry it or fail it."""
    outcome = Outcome(
        ok=False, reason=FailureReason.WORKER_LOST, error="worker lost (lease expired)"
    )
    return step_finish(step, outcome, lease_expired=True)


# --- cancel, resume, rerun --------------------------------------------------------------


def run_stop(
    run_id: str,
    *,
    status: str = RunStatus.CANCELLED,
    reason: str = FailureReason.CANCELLED,
    error: str = "",
    grace_seconds: float | None = None,
    wait_for_running: bool = False,
) -> Run:
    """Cancel (or fail, for a run timeout) a run that has not finished."""
    now = timezone.now()
    with locked_run(run_id) as tx:
        if tx.run.status in RUN_TERMINAL:
            raise Conflict(f"run {run_id} is already {tx.run.status}", code="run_finished")
        stopping = [StepStatus.PENDING, StepStatus.QUEUED, StepStatus.WAITING_APPROVAL]
        if not wait_for_running:
            stopping.append(StepStatus.RUNNING)
        stopped = list(StepRun.objects.filter(run_id=run_id, status__in=stopping))
        StepRun.objects.filter(pk__in=[s.pk for s in stopped]).update(
            status=StepStatus.CANCELLED,
            reason=FailureReason.CANCELLED,
            finished_at=now,
            lease_expires_at=None,
        )
        StepAttempt.objects.bulk_create(
            StepAttempt(
                step_run_id=s.pk,
                number=s.attempt,
                status=StepStatus.CANCELLED,
                started_at=s.started_at or now,
                finished_at=now,
                reason=FailureReason.CANCELLED,
                error=error or "cancelled",
                worker=s.worker,
            )
            for s in stopped
            if s.status == StepStatus.RUNNING
        )
        for step in stopped:
            tx.step_status(step.step_id, StepStatus.CANCELLED)
        tx.set_run(cancel_grace_seconds=grace_seconds)
        if wait_for_running:
            # Ends cancelled once nothing runs (now, or when its running steps end); till
            # then it holds its slot, so max_active_runs and the global cap still hold.
            if tx.run.cancel_requested_at is None:
                tx.set_run(cancel_requested_at=now)
                tx.event("run.cancel", tx.run.status, wait_for_running=True)
            _settle_run(tx, step_states(run_id), now)
        else:
            _finish_run(tx, status, reason, error, now)
        return tx.run


def run_resume(run_id: str) -> Run:
    """Re-run the failed, cancelled and skipped steps of a finished run, same run id."""
    with locked_run(run_id) as tx:
        if tx.run.status not in RUN_RESUMABLE:
            raise Conflict(
                f"only failed, partially_succeeded or cancelled runs can be resumed; "
                f"run {run_id} is {tx.run.status}",
                code="not_resumable",
            )
        steps = step_states(run_id)
        _refuse_if_running(steps, run_id)
        keep = (StepStatus.SUCCEEDED,)
        _reset_steps(tx, [s for s in steps if s.status not in keep])
        _reopen_run(tx, action="resume")
    return tx.run


def rerun_plan(run: Run, from_step: str) -> list[str]:
    plan = plan_for(run)
    if from_step not in plan.steps:
        raise NotFound(f"run {run.pk} has no step {from_step!r}", code="step_not_found")
    targets = {from_step} | plan.downstream(from_step)
    return [step_id for step_id in plan.order if step_id in targets]


def run_rerun(run_id: str, from_step: str) -> Run:
    """Run `from_step` and everything downstream of it again; keep the rest."""
    with locked_run(run_id) as tx:
        if tx.run.status not in RUN_TERMINAL:
            raise Conflict(
                f"run {run_id} is {tx.run.status}; rerun needs a finished run",
                code="run_not_finished",
            )
        targets = set(rerun_plan(tx.run, from_step))
        steps = step_states(run_id)
        _refuse_if_running(steps, run_id)
        _reset_steps(tx, [s for s in steps if s.step_id in targets])
        _reopen_run(tx, action="rerun", from_step=from_step)
    return tx.run


def _refuse_if_running(steps: list[StepState], run_id: str) -> None:
    running = [s.step_id for s in steps if s.status == StepStatus.RUNNING]
    if running:
        raise Conflict(
            f"run {run_id} still has running steps: {', '.join(running)}", code="steps_running"
        )


def _reset_steps(tx: RunTx, steps: list[StepState]) -> None:
    plan = plan_for(tx.run)
    ids = [s.pk for s in steps]
    # Approval decisions stay: they belong to their attempt, and the next one asks again.
    StepOutput.objects.filter(step_run_id__in=ids).delete()
    for step in steps:
        # Attempt numbers go on (history is kept); the retry budget starts afresh.
        budget = retry_policy(plan.step(step.step_id))["max_attempts"]
        StepRun.objects.filter(pk=step.pk).update(
            status=StepStatus.PENDING,
            max_attempts=step.attempt + budget,
            not_before=None,
            enqueued_at=None,
            lease_expires_at=None,
            started_at=None,
            finished_at=None,
            duration_ms=None,
            waiting_since=None,
            exit_code=None,
            reason="",
            error="",
            row_count=None,
        )
        tx.step_status(step.step_id, StepStatus.PENDING)


def _reopen_run(tx: RunTx, **data) -> None:
    tx.set_run(
        finished_at=None,
        duration_ms=None,
        reason="",
        error="",
        cancel_grace_seconds=None,
        cancel_requested_at=None,
        deadline_at=None,
    )
    tx.run_status(RunStatus.PENDING, **data)
    workflow_id = tx.run.workflow_id
    tx.after_commit.append(lambda: _readmit(workflow_id))


def _readmit(workflow_id: int) -> None:
    from runs.engine.dispatch import enqueue_steps

    enqueue_steps(admit_waiting(workflow_id))


# --- approvals ---------------------------------------------------------------------------


def step_decide(run_id: str, step_id: str, *, user, approve: bool, comment: str = "") -> Ready:
    """Record one approver's decision; enough approvals succeed the step, one rejection
    fails it."""
    now = timezone.now()
    with locked_run(run_id) as tx:
        step = StepRun.objects.filter(run_id=run_id, step_id=step_id).first()
        if step is None:
            raise NotFound(f"run {run_id} has no step {step_id!r}", code="step_not_found")
        if step.status != StepStatus.WAITING_APPROVAL:
            raise Conflict(
                f"step {step_id!r} is not waiting for approval (it is {step.status})",
                code="not_waiting",
            )
        plan = plan_for(tx.run)
        spec = plan.step(step_id)
        if not spec.get("allow_self_approval", True) and tx.run.created_by_id == user.pk:
            raise Forbidden(
                "you started this run and this step does not allow self-approval",
                code="self_approval",
            )
        this_round = Approval.objects.filter(step_run=step, attempt=step.attempt)
        if this_round.filter(user=user).exists():
            raise Conflict(
                f"{user.get_username()} already decided on step {step_id!r}", code="already_decided"
            )
        decision = Approval.Decision.APPROVED if approve else Approval.Decision.REJECTED
        Approval.objects.create(
            step_run=step, attempt=step.attempt, user=user, decision=decision, comment=comment
        )
        tx.event(
            "step.decision", decision, step_id=step_id, user=user.get_username(), comment=comment
        )
        if not approve:
            error = f"rejected by {user.get_username()}" + (f": {comment}" if comment else "")
            return _close_approval(tx, step, plan, now, ok=False, error=error)
        approvers = list(
            this_round.filter(decision=Approval.Decision.APPROVED).values_list(
                "user__username", flat=True
            )
        )
        if len(approvers) < int(spec.get("approvals_required", 1)):
            return []
        return _close_approval(tx, step, plan, now, ok=True, approvers=approvers)


def step_expire_approval(step: StepRun) -> Ready:
    now = timezone.now()
    with locked_run(step.run_id) as tx:
        if not StepRun.objects.filter(pk=step.pk, status=StepStatus.WAITING_APPROVAL).exists():
            return []
        plan = plan_for(tx.run)
        return _close_approval(
            tx, step, plan, now, ok=False, error="approval timed out", reason=FailureReason.TIMEOUT
        )


def _close_approval(tx, step, plan, now, *, ok, error="", approvers=(), reason=""):
    status = StepStatus.SUCCEEDED if ok else StepStatus.FAILED
    reason = reason or ("" if ok else FailureReason.REJECTED)
    StepRun.objects.filter(pk=step.pk, status=StepStatus.WAITING_APPROVAL).update(
        status=status,
        finished_at=now,
        reason=reason,
        error=error,
        duration_ms=int((now - (step.waiting_since or now)).total_seconds() * 1000),
    )
    if ok:
        outputs = _output_rows(step, {"approved_by": list(approvers)})
        tx.write(sql.insert_statements(StepOutput, sql.OUTPUT_NAMES, outputs))
    tx.step_status(step.step_id, status, **({"reason": reason} if reason else {}))
    return advance(tx, step_states(step.run_id), plan)
