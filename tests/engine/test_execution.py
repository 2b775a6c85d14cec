"""The engine end to end with a real `trellis worker` process (django-q2 cluster)."""

import os
import time

import pytest

from runs import services
from runs.models import RunEvent, StepAttempt, StepOutput, StepRun
from runs.status import RunStatus, StepStatus
from tests.helpers import wait_for_run, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DIAMOND = """
name: diamond
steps:
  - {id: top, kind: noop}
  - id: left
    kind: shell
    command: ["sh", "-c", "sleep 0.3; echo side=left >> $TRELLIS_OUTPUT"]
    depends_on: [top]
  - id: right
    kind: shell
    command: ["sh", "-c", "sleep 0.3; echo side=right >> $TRELLIS_OUTPUT"]
    depends_on: [top]
  - {id: join, kind: noop, depends_on: [left, right]}
"""


def step(run, step_id) -> StepRun:
    return StepRun.objects.get(run=run, step_id=step_id)


def test_diamond_join_runs_exactly_once(engine, make_workflow):
    make_workflow(DIAMOND)
    runs = [services.run_start(workflow="diamond")[0] for _ in range(5)]
    for run in runs:
        assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
        join = step(run, "join")
        assert join.attempt == 1
        assert StepAttempt.objects.filter(step_run=join).count() == 1
        started = RunEvent.objects.filter(run=run, step_id="join", status="running").count()
        assert started == 1
        seqs = list(RunEvent.objects.filter(run=run).values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free per run


def test_outputs_flow_between_shell_and_python(engine, make_workflow):
    make_workflow(
        """
name: handoff
steps:
  - id: make
    kind: shell
    command: 'echo "word=trellis" >> "$TRELLIS_OUTPUT"'
  - {id: upper, kind: python, callable: examples.handoff_test.upper, depends_on: [make]}
  - id: show
    kind: shell
    command: ["sh", "-c", "echo \\"value=$1\\" >> $TRELLIS_OUTPUT", "show", "{{ steps.upper.outputs.loud }}"]
    depends_on: [upper]
"""
    )
    run, _ = services.run_start(workflow="handoff")
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    outputs = {
        o.step_run.step_id + "." + o.key: o.value for o in StepOutput.objects.filter(run=run)
    }
    assert outputs["make.word"] == "trellis"
    assert outputs["upper.loud"] == "TRELLIS!"
    assert outputs["show.value"] == "TRELLIS!"


def test_retry_then_success(engine, make_workflow):
    make_workflow(
        """
name: flaky
steps:
  - id: flaky
    kind: shell
    command: '[ "$TRELLIS_ATTEMPT" -ge 2 ] || exit 3; echo ok'
    retries: {max_attempts: 3, delay: 0.2, backoff: 2}
"""
    )
    run, _ = services.run_start(workflow="flaky")
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    flaky = step(run, "flaky")
    attempts = list(
        StepAttempt.objects.filter(step_run=flaky).values_list("number", "status", "exit_code")
    )
    assert attempts == [(1, "failed", 3), (2, "succeeded", 0)]


def test_retries_exhausted_fail_the_run(engine, make_workflow):
    make_workflow(
        """
name: always-fails
steps:
  - {id: bad, kind: shell, command: "exit 1", retries: {max_attempts: 2, delay: 0.1}}
  - {id: after, kind: noop, depends_on: [bad]}
"""
    )
    run, _ = services.run_start(workflow="always-fails")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.FAILED
    assert step(run, "bad").attempt == 2
    assert step(run, "after").status == StepStatus.SKIPPED


def test_step_timeout(engine, make_workflow):
    make_workflow(
        """
name: slow
steps:
  - {id: slow, kind: shell, command: "sleep 30", timeout: 1}
"""
    )
    run, _ = services.run_start(workflow="slow")
    run = wait_for_run(run.pk, timeout=20)
    assert run.status == RunStatus.FAILED
    slow = step(run, "slow")
    assert slow.status == StepStatus.FAILED
    assert slow.reason == "timeout"


def test_python_step_timeout(engine, make_workflow):
    make_workflow(
        """
name: slow-python
steps:
  - {id: nap, kind: python, callable: examples.handoff_test.nap, timeout: 1}
"""
    )
    run, _ = services.run_start(workflow="slow-python", input={"seconds": 30})
    run = wait_for_run(run.pk, timeout=20)
    assert step(run, "nap").reason == "timeout"


def test_cancel_kills_running_shell_process(engine, make_workflow, tmp_path):
    pid_file = tmp_path / "pid"
    make_workflow(
        """
name: long
steps:
  - id: long
    kind: shell
    command: ["sh", "-c", "echo $$ > \\"$1\\"; exec sleep 300", "long", "{{ input.pid_file }}"]
"""
    )
    run, _ = services.run_start(workflow="long", input={"pid_file": str(pid_file)})
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="pid file")
    pid = int(pid_file.read_text())
    os.kill(pid, 0)  # alive
    services.run_cancel(run_id=run.pk, grace_seconds=0)
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.CANCELLED
    wait_until(lambda: not _alive(pid), timeout=10, message="process to be gone")
    assert step(run, "long").status == StepStatus.CANCELLED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped since the kill(0) above
        return False


def test_resume_reruns_only_failed_steps(engine, make_workflow, tmp_path):
    flag = tmp_path / "fixed"
    make_workflow(
        """
name: resumable
steps:
  - id: first
    kind: shell
    command: 'echo "n=1" >> "$TRELLIS_OUTPUT"'
  - id: second
    kind: shell
    command: ["sh", "-c", "test -f \\"$1\\" && echo got=$2 >> $TRELLIS_OUTPUT", "x", "{{ input.flag }}", "{{ steps.first.outputs.n }}"]
    depends_on: [first]
"""
    )
    run, _ = services.run_start(workflow="resumable", input={"flag": str(flag)})
    assert wait_for_run(run.pk).status == RunStatus.FAILED
    flag.write_text("ok")
    services.run_resume(run_id=run.pk)
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert step(run, "first").attempt == 1  # not run again
    assert step(run, "second").attempt == 2  # history kept
    assert StepOutput.objects.get(step_run__run=run, key="got").value == "1"


def test_rerun_from_step(engine, make_workflow):
    make_workflow(
        """
name: chain3
steps:
  - {id: a, kind: noop}
  - {id: b, kind: noop, depends_on: [a]}
  - {id: c, kind: noop, depends_on: [b]}
"""
    )
    run, _ = services.run_start(workflow="chain3")
    wait_for_run(run.pk)
    assert services.run_rerun(run_id=run.pk, from_step="b", dry_run=True) == ["b", "c"]
    services.run_rerun(run_id=run.pk, from_step="b")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert [step(run, s).attempt for s in "abc"] == [1, 2, 2]


def test_sigkilled_worker_is_recovered_by_lease(engine, make_workflow, tmp_path):
    marker = tmp_path / "started"
    make_workflow(
        """
name: victim
steps:
  - id: victim
    kind: python
    callable: examples.handoff_test.slow_once
    retries: {max_attempts: 2, delay: 0}
"""
    )
    run, _ = services.run_start(workflow="victim", input={"marker": str(marker)})
    wait_until(marker.exists, message="step to start")
    victim = step(run, "victim")
    pid = int(victim.worker.rsplit(":", 1)[1])
    os.kill(pid, 9)
    run = wait_for_run(run.pk, timeout=30)
    assert run.status == RunStatus.SUCCEEDED
    attempts = list(
        StepAttempt.objects.filter(step_run=victim).values_list("number", "status", "reason")
    )
    assert attempts == [(1, "failed", "worker_lost"), (2, "succeeded", "")]


def test_max_active_runs_queues_the_rest(engine, make_workflow):
    make_workflow(
        """
name: one-at-a-time
max_active_runs: 1
steps:
  - {id: work, kind: shell, command: "sleep 0.3"}
"""
    )
    runs = [services.run_start(workflow="one-at-a-time")[0] for _ in range(3)]
    assert [r.status for r in runs] == ["running", "queued", "queued"]
    finished = [wait_for_run(r.pk) for r in runs]
    assert all(r.status == RunStatus.SUCCEEDED for r in finished)
    spans = sorted((r.started_at, r.finished_at) for r in finished)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # never two at once


def test_shell_metacharacters_reach_the_step_only_as_data(engine, make_workflow, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("still here")
    hostile = f'"; rm -rf {canary} #'
    make_workflow(
        """
name: echo-input
steps:
  - id: as-string
    kind: shell
    command: 'echo "said={{ input.text }}" >> "$TRELLIS_OUTPUT"'
  - id: as-argv
    kind: shell
    command: ["sh", "-c", "echo \\"said=$1\\" >> \\"$TRELLIS_OUTPUT\\"", "x", "{{ input.text }}"]
  - id: as-env
    kind: shell
    command: 'echo "said=$TEXT" >> "$TRELLIS_OUTPUT"'
    env: {TEXT: "{{ input.text }}"}
"""
    )
    run, _ = services.run_start(workflow="echo-input", input={"text": hostile})
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    assert canary.read_text() == "still here"
    said = dict(StepOutput.objects.filter(run=run).values_list("step_run__step_id", "value"))
    assert said["as-argv"] == hostile
    assert said["as-env"] == hostile
    assert hostile in said["as-string"]


def test_logs_are_stored_while_the_step_runs(engine, make_workflow):
    make_workflow(
        """
name: chatty
steps:
  - {id: talk, kind: shell, command: "echo first; sleep 1.5; echo second"}
"""
    )
    run, _ = services.run_start(workflow="chatty")
    talk = wait_until(
        lambda: StepRun.objects.filter(run=run, step_id="talk", status="running").first()
    )
    from runs.models import LogChunk

    wait_until(
        lambda: LogChunk.objects.filter(step_run=talk, text__contains="first").exists(),
        timeout=1.4,
        message="first line while running",
    )
    assert StepRun.objects.get(pk=talk.pk).status == StepStatus.RUNNING
    wait_for_run(run.pk)
    text = "".join(LogChunk.objects.filter(step_run=talk).values_list("text", flat=True))
    assert text == "first\nsecond\n"


def test_continue_on_failure_gives_partial_success(engine, make_workflow):
    make_workflow(
        """
name: partial
steps:
  - {id: main, kind: noop}
  - {id: optional, kind: shell, command: "exit 2", continue_on_failure: true, depends_on: [main]}
  - {id: after, kind: noop, depends_on: [optional]}
"""
    )
    run, _ = services.run_start(workflow="partial")
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.PARTIALLY_SUCCEEDED
    assert step(run, "after").status == StepStatus.SUCCEEDED


def test_run_timeout_fails_the_run(engine, make_workflow):
    make_workflow(
        """
name: run-timeout
timeout: 1
steps:
  - {id: sleepy, kind: shell, command: "sleep 30"}
"""
    )
    run, _ = services.run_start(workflow="run-timeout")
    start = time.monotonic()
    run = wait_for_run(run.pk, timeout=20)
    assert run.status == RunStatus.FAILED
    assert run.reason == "timeout"
    assert time.monotonic() - start < 15
