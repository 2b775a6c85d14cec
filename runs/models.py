import os
import secrets
import time

from django.conf import settings
from django.db import models
from django.db.models import Q

from runs.status import (
    RUN_ACTIVE,
    RUN_NOT_STARTED,
    RUN_TERMINAL,
    RunStatus,
    StepStatus,
    Trigger,
)


def new_run_id() -> str:
    """32 hex chars, time-ordered: 12 of milliseconds then 20 random."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


class Run(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_run_id, editable=False)
    workflow = models.ForeignKey(
        "workflows.Workflow",
        on_delete=models.CASCADE,
        related_name="runs",
        db_index=False,  # led by run_workflow_created's first column
    )
    version = models.ForeignKey("workflows.WorkflowVersion", on_delete=models.PROTECT)
    dag_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=24, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.API)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    input = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    logical_date = models.DateTimeField(null=True, blank=True)
    start_at = models.DateTimeField(null=True, blank=True)
    # Unique where set (uniq_idempotency_key): most runs have none, and are not indexed.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    # Cancel options, read by workers running this run's steps.
    cancel_grace_seconds = models.FloatField(null=True, blank=True)
    # A cancel that lets running steps finish: the run keeps its concurrency slot until
    # they have, then ends cancelled.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Per-run event sequence: the last `seq` handed out (see engine.events).
    event_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="run_created"),
            # Filtered run lists, newest first: the page's ids and its capped count read
            # the index of the filtered columns alone (api.quick), so each ends with id.
            models.Index(fields=["status", "-created_at", "-id"], name="run_status_created"),
            models.Index(fields=["workflow", "-created_at", "-id"], name="run_workflow_created"),
            models.Index(
                fields=["workflow", "status", "-created_at", "-id"],
                name="run_workflow_status_created",
            ),
            models.Index(fields=["trigger", "-created_at"], name="run_trigger_created"),
            # Partial, for the ticker and admission: a run enters these when it waits or
            # runs with a deadline, and no other status change writes to them.
            models.Index(
                fields=["workflow", "created_at"],
                name="run_waiting",
                condition=Q(status__in=sorted(RUN_NOT_STARTED)),
            ),
            models.Index(
                fields=["deadline_at"],
                name="run_active_deadline",
                condition=Q(status__in=sorted(RUN_ACTIVE), deadline_at__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="uniq_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            )
        ]
        permissions = [("cancel_run", "Can cancel and resume runs")]

    def __str__(self) -> str:
        return f"{self.workflow.name} {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in RUN_TERMINAL


class StepRun(models.Model):
    # Looked up by run through uniq_step_per_run: a separate index is one more to update.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
    step_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=16)
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempt = models.PositiveIntegerField(default=0, help_text="the current or last attempt")
    max_attempts = models.PositiveIntegerField(default=1)
    continue_on_failure = models.BooleanField(default=False)
    not_before = models.DateTimeField(null=True, blank=True, help_text="retry delay")
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    waiting_since = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "step_id"], name="uniq_step_per_run")]
        # Partial: a step changes status several times, and each change writes only to
        # the index of the status it enters (and the ticker reads only these few rows).
        indexes = [
            models.Index(
                fields=["not_before", "id"], name="step_queued", condition=Q(status="queued")
            ),
            models.Index(
                fields=["lease_expires_at"], name="step_running", condition=Q(status="running")
            ),
            models.Index(
                fields=["waiting_since"],
                name="step_waiting",
                condition=Q(status="waiting_approval"),
            ),
        ]
        permissions = [("approve_steprun", "Can approve or reject steps waiting for approval")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.step_id}"


class StepAttempt(models.Model):
    step_run = models.ForeignKey(
        StepRun,
        on_delete=models.CASCADE,
        related_name="attempts",
        db_index=False,  # led by a unique constraint's or an index's first column
    )
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=StepStatus.choices)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["step_run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "number"], name="uniq_attempt_number")
        ]

    def __str__(self) -> str:
        return f"{self.step_run} #{self.number} {self.status}"


class StepOutput(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="outputs")
    step_run = models.ForeignKey(
        StepRun,
        on_delete=models.CASCADE,
        related_name="outputs",
        db_index=False,  # led by a unique constraint's or an index's first column
    )
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)

    class Meta:
        ordering = ["step_run", "key"]
        constraints = [models.UniqueConstraint(fields=["step_run", "key"], name="uniq_output_key")]

    def __str__(self) -> str:
        return f"{self.step_run}.{self.key}"


class LogChunk(models.Model):
    """A batch of log text from one stream of one attempt; `offset` is its byte position."""

    step_run = models.ForeignKey(
        StepRun,
        on_delete=models.CASCADE,
        related_name="log_chunks",
        db_index=False,  # led by a unique constraint's or an index's first column
    )
    attempt = models.PositiveIntegerField()
    stream = models.CharField(max_length=8)  # stdout | stderr
    offset = models.BigIntegerField(default=0)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step_run", "attempt", "stream", "offset"]
        indexes = [
            models.Index(fields=["step_run", "attempt", "stream", "offset"], name="log_chunk_pos")
        ]

    def __str__(self) -> str:
        return f"{self.step_run} #{self.attempt} {self.stream}@{self.offset}"


class RunEvent(models.Model):
    """Append-only outbox of a run's transitions; `seq` is gap-free per run."""

    run = models.ForeignKey(
        Run,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,  # led by a unique constraint's or an index's first column
    )
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=16)  # run.status | step.status
    step_id = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=24, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="uniq_event_seq")]
        indexes = [models.Index(fields=["created_at"], name="event_created")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type} {self.step_id} {self.status}"


class Approval(models.Model):
    class Decision(models.TextChoices):
        APPROVED = "approved"
        REJECTED = "rejected"

    step_run = models.ForeignKey(
        StepRun,
        on_delete=models.CASCADE,
        related_name="approvals",
        db_index=False,  # led by a unique constraint's or an index's first column
    )
    # The step's attempt this decision was made in: a resumed or rerun run asks again, and
    # the earlier rounds' decisions are kept as history.
    attempt = models.PositiveIntegerField(default=1)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step_run", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["step_run", "attempt", "user"], name="uniq_decision_per_user_attempt"
            )
        ]

    def __str__(self) -> str:
        return f"{self.step_run} {self.decision} by {self.user_id}"


def worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"
