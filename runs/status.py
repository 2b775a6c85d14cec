"""The one status vocabulary. Stored values are lowercase and never change."""

from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INVALID = "invalid"

    @property
    def is_terminal(self) -> bool:
        return self in RUN_TERMINAL

    @property
    def is_active(self) -> bool:
        return self in RUN_ACTIVE


RUN_TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.PARTIALLY_SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.INVALID,
    }
)
# Runs that hold a concurrency slot.
RUN_ACTIVE = frozenset({RunStatus.RUNNING, RunStatus.WAITING})
RUN_NOT_STARTED = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.SCHEDULED})
RUN_RESUMABLE = frozenset({RunStatus.FAILED, RunStatus.PARTIALLY_SUCCEEDED, RunStatus.CANCELLED})


class StepStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in STEP_TERMINAL


STEP_TERMINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
STEP_OPEN = frozenset(
    {StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL}
)


class Trigger(models.TextChoices):
    API = "api"
    CLI = "cli"
    BULK = "bulk"
    SCHEDULE = "schedule"
    BACKFILL = "backfill"
    WEBHOOK = "webhook"
    HTTP = "http"
    EVENT = "event"
    ADMIN = "admin"
    DASHBOARD = "dashboard"


class FailureReason(models.TextChoices):
    ERROR = "error"
    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED_OVERLAP = "overlap_skip"
