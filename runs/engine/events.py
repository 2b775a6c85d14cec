"""Run transactions: the run row locked, events collected, written once at the end."""

from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from runs.models import Run, RunEvent


class RunTx:
    """A transaction holding one run's row lock; collects events and run field changes."""

    def __init__(self, run: Run):
        self.run = run
        self.events: list[RunEvent] = []
        self.run_changes: dict = {}
        self.after_commit: list = []

    def event(self, type: str, status: str, step_id: str = "", **data) -> None:
        self.run.event_seq += 1
        self.events.append(
            RunEvent(
                run_id=self.run.pk,
                seq=self.run.event_seq,
                type=type,
                step_id=step_id,
                status=status,
                data=data,
                created_at=timezone.now(),
            )
        )

    def set_run(self, **fields) -> None:
        for name, value in fields.items():
            setattr(self.run, name, value)
        self.run_changes.update(fields)

    def run_status(self, status: str, **data) -> None:
        self.set_run(status=status)
        self.event("run.status", status, **data)

    def step_status(self, step_id: str, status: str, **data) -> None:
        self.event("step.status", status, step_id=step_id, **data)

    def flush(self) -> None:
        if self.events:
            RunEvent.objects.bulk_create(self.events)
            self.run_changes["event_seq"] = self.run.event_seq
        if self.run_changes:
            Run.objects.filter(pk=self.run.pk).update(**self.run_changes)
        self.events, self.run_changes = [], {}


@contextmanager
def locked_run(run_id: str):
    """Lock the run row for the transaction: every transition of a run goes through here,
    so fan-in decisions and event `seq` allocation never race."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        tx = RunTx(run)
        yield tx
        tx.flush()
        for callback in tx.after_commit:
            transaction.on_commit(callback)
