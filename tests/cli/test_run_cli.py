"""The `trellis` CLI as a user runs it: a real process against the test database."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from runs.models import Run
from runs.status import RunStatus
from tests.conftest import ROOT, database_url_for_tests
from tests.helpers import wait_for_run, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def trellis(*args, timeout=60, user="alice"):
    env = {**os.environ, "DATABASE_URL": database_url_for_tests(), "TRELLIS_USER": user}
    return subprocess.run(
        [sys.executable, "-m", "config.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_watching(workflow: str):
    """`trellis run start <workflow> --watch` in the background, once its run is running."""
    env = {**os.environ, "DATABASE_URL": database_url_for_tests()}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "config.cli", "run", "start", workflow, "--watch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = wait_until(lambda: Run.objects.filter(workflow__name=workflow, status="running").first())
    return watcher, run


SCHEMA_WF = """
name: typed
input_schema:
  type: object
  required: [pr]
  properties: {pr: {type: integer}}
steps:
  - {id: only, kind: noop}
"""


def test_start_watch_succeeds_with_exit_0(engine, make_workflow):
    make_workflow(SCHEMA_WF)
    result = trellis("run", "start", "typed", "--input", '{"pr": 42}', "--watch")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "only" in "\n".join(lines) and "running" in "\n".join(lines)
    assert lines[-1].endswith("succeeded")
    run = Run.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.trigger == "cli"
    assert run.created_by.username == "alice"


def test_watch_exit_codes_for_failed_and_cancelled(engine, make_workflow):
    make_workflow("name: fails\nsteps:\n  - {id: boom, kind: shell, command: 'exit 1'}\n")
    assert trellis("run", "start", "fails", "--watch").returncode == 1

    make_workflow("name: sleeps\nsteps:\n  - {id: nap, kind: shell, command: 'sleep 30'}\n")
    watcher, run = start_watching("sleeps")
    assert trellis("run", "cancel", run.pk, "--grace", "0").returncode == 0
    assert watcher.wait(timeout=30) == 2


def test_ctrl_c_detaches_without_cancelling(engine, make_workflow):
    make_workflow("name: sleeps\nsteps:\n  - {id: nap, kind: shell, command: 'sleep 2'}\n")
    watcher, run = start_watching("sleeps")
    time.sleep(0.3)
    watcher.send_signal(signal.SIGINT)
    _, err = watcher.communicate(timeout=10)
    assert "detached" in err and "Traceback" not in err
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED


def test_bulk_is_atomic_and_names_the_bad_line(make_workflow, tmp_path):
    make_workflow(SCHEMA_WF)
    good = tmp_path / "good.jsonl"
    good.write_text('{"pr": 1}\n{"pr": 2}\n\n{"pr": 3}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pr": 1}\n{"pr": 2}\n{"pr": "three"}\n')

    result = trellis("run", "bulk", "typed", "--from-file", str(bad))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {bad} line 3: input.pr: 'three' is not of type 'integer' (nothing was created)"
    ]
    assert Run.objects.count() == 0

    result = trellis("run", "bulk", "typed", "--from-file", str(good), "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["run_ids"]) == 3
    result = trellis("run", "bulk", "typed", '{"pr": 7}', '{"pr": 8}')
    assert result.returncode == 0
    assert Run.objects.count() == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "start", "nope"], "error: no workflow named 'nope'"),
        (["run", "start", "typed", "--input", "{bad"], "error: --input is not valid JSON"),
        (["run", "start", "typed", "--input", '{"pr": "x"}'], "error: input does not match"),
        (["run", "get", "0000"], "error: no run with id '0000'"),
        (["run", "cancel", "0000"], "error: no run with id '0000'"),
        (["workflow", "show", "nope"], "error: no workflow named 'nope'"),
        (["workflow", "validate", "/nonexistent.yaml"], "error: no such file"),
    ],
)
def test_errors_are_one_line_on_stderr(make_workflow, args, message):
    make_workflow(SCHEMA_WF)
    result = trellis(*args)
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_validate_reports_each_error(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: x\nschedule: {cron: '99 * * * *'}\nsteps:\n  - {id: a, depends_on: [b]}\n"
    )
    result = trellis("workflow", "validate", str(path))
    assert result.returncode == 1
    assert "error: schedule.cron: '99 * * * *' is not a valid cron expression" in result.stderr
    assert "error: steps[0](a).depends_on: unknown step 'b'" in result.stderr


def test_get_list_logs_and_approve(engine, make_workflow):
    make_workflow(
        """
name: gated-cli
steps:
  - {id: hello, kind: shell, command: "echo hello from the step"}
  - {id: gate, kind: approval, depends_on: [hello]}
"""
    )
    started = trellis("run", "start", "gated-cli", "--json")
    run_id = json.loads(started.stdout)["run_id"]
    wait_for_run(run_id, statuses={RunStatus.WAITING})
    detail = json.loads(trellis("run", "get", run_id, "--json").stdout)
    assert [(s["step_id"], s["status"]) for s in detail["steps"]] == [
        ("hello", "succeeded"),
        ("gate", "waiting_approval"),
    ]
    assert trellis("run", "logs", run_id, "hello").stdout == "hello from the step\n"
    listed = json.loads(trellis("run", "list", "--status", "waiting", "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id]
    approved = trellis("run", "approve", run_id, "gate", "--comment", "fine", user="bob")
    assert approved.returncode == 0, approved.stderr
    assert wait_for_run(run_id).status == RunStatus.SUCCEEDED
    again = trellis("run", "approve", run_id, "gate")
    assert again.returncode == 3 and "not waiting for approval" in again.stderr


def test_logs_follow_streams_until_the_run_ends(engine, make_workflow):
    make_workflow(
        """
name: chatty
steps:
  - {id: one, kind: shell, command: "echo first; sleep 1; echo second >&2"}
  - {id: two, kind: shell, command: "echo third", depends_on: [one]}
"""
    )
    run_id = json.loads(trellis("run", "start", "chatty", "--json").stdout)["run_id"]
    result = trellis("run", "logs", run_id, "--follow", timeout=30)
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["[one] first", "[two] third"]
    assert result.stderr.splitlines() == ["[one] second"]
    assert Run.objects.get(pk=run_id).status == RunStatus.SUCCEEDED
