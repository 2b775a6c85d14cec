"""More lifecycle semantics with the real worker: HTTP steps, cancel modes, overlap,
the global cap and the shipped examples."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from runs import services
from runs.models import Run, RunEvent, StepAttempt, StepOutput, StepRun
from runs.status import RunStatus, StepStatus
from tests.helpers import wait_for_run, wait_until
from workflows.services import workflow_sync

pytestmark = pytest.mark.django_db(transaction=True)


class Echo(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if b"explode" in body else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"got": json.loads(body), "path": self.path}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = HTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_http_step_posts_rendered_json_and_keeps_the_answer(engine, make_workflow, echo_server):
    make_workflow(
        f"""
name: notify
steps:
  - id: post
    kind: http
    method: POST
    url: "{echo_server}/hook/{{{{ input.pr }}}}"
    json: {{pr: "{{{{ input.pr }}}}", title: "PR {{{{ input.pr }}}}"}}
"""
    )
    run, _ = services.run_start(workflow="notify", input={"pr": 42})
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    outputs = dict(StepOutput.objects.filter(run=run).values_list("key", "value"))
    assert outputs["status"] == 200
    assert outputs["json"] == {"got": {"pr": 42, "title": "PR 42"}, "path": "/hook/42"}


def test_http_step_fails_on_non_2xx_unless_expected(engine, make_workflow, echo_server):
    make_workflow(
        f"""
name: boom
steps:
  - {{id: strict, kind: http, method: POST, url: "{echo_server}/x", json: {{a: explode}}}}
  - id: lenient
    kind: http
    method: POST
    url: "{echo_server}/x"
    json: {{a: explode}}
    expect_status: [500]
"""
    )
    run, _ = services.run_start(workflow="boom")
    run = wait_for_run(run.pk)
    assert StepRun.objects.get(run=run, step_id="strict").error == "HTTP 500"
    assert StepRun.objects.get(run=run, step_id="lenient").status == StepStatus.SUCCEEDED


def test_cancel_wait_for_running_lets_the_step_finish(engine, make_workflow):
    make_workflow(
        """
name: finish-first
steps:
  - {id: work, kind: shell, command: "sleep 1; echo done=yes >> $TRELLIS_OUTPUT"}
  - {id: next, kind: noop, depends_on: [work]}
"""
    )
    run, _ = services.run_start(workflow="finish-first")
    wait_until(lambda: StepRun.objects.filter(run=run, step_id="work", status="running").exists())
    services.run_cancel(run_id=run.pk, wait_for_running=True)
    # Not cancelled yet: its step still runs, and holds the run's slot.
    requested = Run.objects.get(pk=run.pk)
    assert requested.status == RunStatus.RUNNING and requested.cancel_requested_at is not None
    assert StepRun.objects.get(run=run, step_id="next").status == StepStatus.CANCELLED
    run = wait_for_run(run.pk, timeout=10)
    assert run.status == RunStatus.CANCELLED and run.reason == "cancelled"
    work = StepRun.objects.get(run=run, step_id="work")
    assert work.status == StepStatus.SUCCEEDED
    assert StepOutput.objects.get(step_run=work).value == "yes"
    assert run.finished_at >= work.finished_at
    events = list(RunEvent.objects.filter(run=run).values_list("type", "status"))
    assert ("run.cancel", "running") in events
    assert events[-1] == ("run.status", "cancelled")


def test_cancel_wait_for_running_keeps_the_slot_until_the_step_ends(engine, make_workflow):
    make_workflow(
        """
name: one-slot
max_active_runs: 1
steps:
  - {id: work, kind: shell, command: "sleep 1"}
"""
    )
    first, _ = services.run_start(workflow="one-slot")
    second, _ = services.run_start(workflow="one-slot")
    assert second.status == RunStatus.QUEUED
    wait_until(lambda: StepRun.objects.filter(run=first, status="running").exists())
    services.run_cancel(run_id=first.pk, wait_for_running=True)
    first, second = wait_for_run(first.pk), wait_for_run(second.pk)
    assert (first.status, second.status) == (RunStatus.CANCELLED, RunStatus.SUCCEEDED)
    assert second.started_at >= first.finished_at, "never two runs of it at once"


def test_cancel_wait_for_running_does_not_retry_a_failing_step(engine, make_workflow):
    make_workflow(
        """
name: no-retry-after-cancel
steps:
  - id: work
    kind: shell
    command: "sleep 1; exit 3"
    retries: {max_attempts: 3, delay: 0}
"""
    )
    run, _ = services.run_start(workflow="no-retry-after-cancel")
    wait_until(lambda: StepRun.objects.filter(run=run, status="running").exists())
    services.run_cancel(run_id=run.pk, wait_for_running=True)
    run = wait_for_run(run.pk, timeout=10)
    assert run.status == RunStatus.CANCELLED
    work = StepRun.objects.get(run=run)
    assert (work.status, work.attempt, work.exit_code) == (StepStatus.FAILED, 1, 3)


def test_overlap_skip_and_cancel_running(engine, make_workflow):
    body = "max_active_runs: 1\nsteps:\n  - {id: nap, kind: shell, command: 'sleep 5'}\n"
    make_workflow("name: skipper\noverlap: skip\n" + body)
    first, _ = services.run_start(workflow="skipper")
    second, _ = services.run_start(workflow="skipper")
    assert first.status == RunStatus.RUNNING
    assert second.status == RunStatus.CANCELLED and second.reason == "overlap_skip"

    make_workflow("name: replacer\noverlap: cancel_running\n" + body)
    old, _ = services.run_start(workflow="replacer")
    new, _ = services.run_start(workflow="replacer")
    assert Run.objects.get(pk=old.pk).status == RunStatus.CANCELLED
    assert new.status == RunStatus.RUNNING
    for run in (first, new):
        services.run_cancel(run_id=run.pk, grace_seconds=0)


def test_global_cap_queues_runs(engine, make_workflow, settings):
    settings.TRELLIS = {**settings.TRELLIS, "MAX_CONCURRENT_RUNS": 1}
    make_workflow("name: capped\nsteps:\n  - {id: nap, kind: shell, command: 'sleep 0.5'}\n")
    first, _ = services.run_start(workflow="capped")
    second, _ = services.run_start(workflow="capped")
    assert (first.status, second.status) == (RunStatus.RUNNING, RunStatus.QUEUED)
    assert wait_for_run(second.pk).status == RunStatus.SUCCEEDED


def test_scheduled_start_at_waits(engine, make_workflow):
    from datetime import timedelta

    from django.utils import timezone

    make_workflow("name: later\nsteps:\n  - {id: a, kind: noop}\n")
    start_at = timezone.now() + timedelta(seconds=1)
    run, _ = services.run_start(workflow="later", start_at=start_at)
    assert run.status == RunStatus.SCHEDULED
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.started_at >= start_at


def test_shipped_examples_run(engine, settings, users):
    workflow_sync(directory=settings.WORKFLOWS_DIR)
    review, _ = services.run_start(
        workflow="code-review-pipeline", input={"repo": "acme/api", "pr": 42}
    )
    flaky, _ = services.run_start(workflow="flaky-retry")
    wide, _ = services.run_start(workflow="wide-fanout")
    handoff, _ = services.run_start(workflow="outputs-handoff", input={"name": "ann"})
    etl, _ = services.run_start(workflow="etl-daily", input={"rows": 10}, user=users["owner"])
    for run in (review, flaky, wide, handoff):
        assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED, run.workflow.name
    verdict = StepOutput.objects.get(run=review, step_run__step_id="review", key="verdict")
    assert verdict.value == "approve"
    assert StepAttempt.objects.filter(step_run__run=flaky, step_run__step_id="flaky").count() == 2

    assert wait_for_run(etl.pk, statuses={RunStatus.WAITING}).status == RunStatus.WAITING
    assert StepRun.objects.get(run=etl, step_id="load").status == StepStatus.PENDING
    services.step_approve(run_id=etl.pk, step_id="approve-load", user=users["reviewer"])
    assert wait_for_run(etl.pk).status == RunStatus.SUCCEEDED
    loaded = StepOutput.objects.get(run=etl, step_run__step_id="load", key="loaded").value
    valid = StepOutput.objects.get(run=etl, step_run__step_id="validate", key="valid_rows").value
    assert loaded == str(valid)


def test_nul_bytes_are_refused_in_input_and_cleaned_from_outputs(engine, make_workflow):
    from runs.engine.errors import InvalidInput

    make_workflow(
        """
name: nul
steps:
  - {id: emit, kind: python, callable: examples.handoff_test.emit_nul}
  - {id: shell, kind: shell, command: "printf 'a\\\\000b\\\\n'; printf 'k=v\\\\000w\\\\n' >> $TRELLIS_OUTPUT"}
"""
    )
    with pytest.raises(InvalidInput) as refused:
        services.run_start(workflow="nul", input={"text": "a\x00b"})
    assert refused.value.details["errors"][0]["path"] == "input.text"
    assert not Run.objects.exists()

    run, _ = services.run_start(workflow="nul")
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    outputs = dict(StepOutput.objects.filter(run=run).values_list("key", "value"))
    assert outputs["text"] == "a\ufffdb"
    assert outputs["k"] == "v\ufffdw"
