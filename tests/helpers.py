"""Helpers for tests that wait on the real engine."""

import time

from runs.models import Run
from runs.status import RUN_TERMINAL


def wait_for_run(run_id: str, statuses=RUN_TERMINAL, timeout: float = 30.0) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        if time.monotonic() > deadline:
            steps = list(run.steps.values_list("step_id", "status"))
            raise AssertionError(f"run {run_id} still {run.status} after {timeout}s: {steps}")
        time.sleep(0.05)


def wait_until(predicate, timeout: float = 20.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)
