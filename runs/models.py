import os
import secrets
import time

from django.conf import settings
from django.db import models

from runs.status import RUN_TERMINAL, RunStatus, StepStatus, Trigger


def new_run_id() -> str:
    """32 hex chars, time-ordered: 12 of milliseconds then 20 random."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


class Run(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_run_id, editable=False)
    workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.CASCADE, related_name="runs"
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
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    # Cancel options, read by workers running this run's steps.
    cancel_grace_seconds = models.FloatField(null=True, blank=True)
    # Per-run event sequence: the last `seq` handed out (see engine.events).
    event_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="run_created"),
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created"),
            models.Index(fields=["workflow", "status"], name="run_workflow_status"),
            models.Index(fields=["trigger", "-created_at"], name="run_trigger_created"),
            models.Index(fields=["status", "start_at"], name="run_status_start_at"),
            models.Index(fields=["status", "deadline_at"], name="run_status_deadline"),
        ]
        permissions = [("cancel_run", "Can cancel and resume runs")]

    def __str__(self) -> str:
        return f"{self.workflow.name} {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in RUN_TERMINAL


class StepRun(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
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
        indexes = [
            models.Index(fields=["status", "not_before"], name="step_status_not_before"),
            models.Index(fields=["status", "lease_expires_at"], name="step_status_lease"),
            models.Index(fields=["status", "waiting_since"], name="step_status_waiting"),
        ]
        permissions = [("approve_steprun", "Can approve or reject steps waiting for approval")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.step_id}"


class StepAttempt(models.Model):
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="attempts")
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
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="outputs")
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)

    class Meta:
        ordering = ["step_run", "key"]
        constraints = [models.UniqueConstraint(fields=["step_run", "key"], name="uniq_output_key")]

    def __str__(self) -> str:
        return f"{self.step_run}.{self.key}"


class LogChunk(models.Model):
    """A batch of log text from one stream of one attempt; `offset` is its byte position."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="log_chunks")
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

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
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

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step_run", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "user"], name="uniq_decision_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.step_run} {self.decision} by {self.user_id}"


def worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"
