"""Inside a run: steps with attempts, step logs with paging, approvals, outputs, preview and
profile, structured logs and their export, events."""

import json

import pytest

from runs.models import Approval, RunEvent, StepOutput, StepRun
from runs.status import RunStatus, StepStatus
from tests.api.conftest import add_log, add_output, settle, start

pytestmark = pytest.mark.django_db


def test_steps_with_attempts(api, chain):
    run = settle(start(), RunStatus.FAILED, failed="transform")
    response = api.get(f"/api/v1/runs/{run.pk}/steps")
    assert response.status_code == 200
    steps = response.json()
    assert [s["step_id"] for s in steps] == ["extract", "transform", "load"]
    transform = steps[1]
    assert transform["status"] == "failed" and transform["depends_on"] == ["extract"]
    assert [a["number"] for a in transform["attempts"]] == [1]
    assert transform["attempts"][0]["exit_code"] == 1
    assert transform["attempts"][0]["duration_ms"] == 2000

    one = api.get(f"/api/v1/runs/{run.pk}/steps/transform")
    assert one.status_code == 200 and one.json() == transform
    missing = api.get(f"/api/v1/runs/{run.pk}/steps/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "step_not_found"


def test_steps_of_many_step_runs_take_few_queries(
    api, make_workflow, django_assert_max_num_queries
):
    steps = "\n".join(f"  - {{id: s{i}, kind: noop}}" for i in range(60))
    make_workflow(f"name: wide\nsteps:\n{steps}\n")
    run = settle(start("wide"))
    with django_assert_max_num_queries(6):
        assert len(api.get(f"/api/v1/runs/{run.pk}/steps").json()) == 60


# --- step log --------------------------------------------------------------------------------


def test_step_log_latest_attempt_and_by_number(api, chain):
    run = settle(start())
    StepRun.objects.filter(run=run, step_id="extract").update(attempt=2)
    add_log(run, "extract", "first try\n", attempt=1)
    add_log(run, "extract", "oops\n", stream="stderr", attempt=1)
    add_log(run, "extract", "second ", "try\n", attempt=2)
    body = api.get(f"/api/v1/runs/{run.pk}/steps/extract/log").json()
    assert body["step_id"] == "extract" and body["attempt"] == 2
    assert body["stdout"] == "second try\n" and body["stderr"] == ""
    first = api.get(f"/api/v1/runs/{run.pk}/steps/extract/log?attempt=1").json()
    assert first["stdout"] == "first try\n" and first["stderr"] == "oops\n"
    missing = api.get(f"/api/v1/runs/{run.pk}/steps/extract/log?attempt=3")
    assert missing.status_code == 404 and missing.json()["code"] == "attempt_not_found"
    assert api.get(f"/api/v1/runs/{run.pk}/steps/extract/log?attempt=zero").status_code == 400
    assert api.get(f"/api/v1/runs/{run.pk}/steps/nope/log").status_code == 404


def test_step_log_tail(api, chain):
    run = settle(start())
    add_log(run, "load", *[f"line {i}\n" for i in range(1, 501)])
    body = api.get(f"/api/v1/runs/{run.pk}/steps/load/log?tail=3").json()
    assert body["stdout"] == "line 498\nline 499\nline 500\n"
    assert body["next_offset"] == sum(len(f"line {i}\n") for i in range(1, 501))
    assert api.get(f"/api/v1/runs/{run.pk}/steps/load/log?tail=3&offset=0").status_code == 400


def test_step_log_pages_a_huge_log_by_byte_offset(api, chain):
    run = settle(start())
    pieces = [f"{i:05d} é\n" for i in range(20_000)]  # 9 bytes each, 180 kB in 200 chunks
    for start_at in range(0, len(pieces), 100):
        add_log(run, "load", "".join(pieces[start_at : start_at + 100]))
    whole = "".join(pieces)
    read, offset, pages = "", 0, 0
    while True:
        body = api.get(
            f"/api/v1/runs/{run.pk}/steps/load/log?stream=stdout&offset={offset}&limit=16384"
        ).json()
        assert len(body["stdout"].encode()) <= 16384
        read += body["stdout"]
        offset, pages = body["next_offset"], pages + 1
        if not body["more"]:
            break
    assert read == whole
    assert pages == 11  # 180,000 bytes in pages of at most 16 KiB
    assert offset == len(whole.encode())


def test_step_log_offset_inside_a_character_starts_at_the_next_one(api, chain):
    run = settle(start())
    add_log(run, "load", "aé", "bc\n")
    body = api.get(f"/api/v1/runs/{run.pk}/steps/load/log?offset=2&limit=3").json()
    assert body["stdout"] == "bc"  # byte 2 is inside é: the window [2, 5) starts at b
    assert body["next_offset"] == 5 and body["more"] is True
    body = api.get(f"/api/v1/runs/{run.pk}/steps/load/log?offset=0&limit=2").json()
    assert body["stdout"] == "a"  # never half a character
    assert body["next_offset"] == 1


def test_step_log_of_a_step_not_started_is_empty(api, chain):
    run = start()
    body = api.get(f"/api/v1/runs/{run.pk}/steps/load/log").json()
    assert body == {
        "step_id": "load",
        "attempt": 0,
        "stdout": "",
        "stderr": "",
        "offset": 0,
        "next_offset": 0,
        "more": False,
    }


# --- approve and reject ----------------------------------------------------------------------


def test_approve(client_for, users, gated):
    run = start("gated", user=users["owner"])
    api = client_for(users["reviewer"], "run")
    response = api.post(
        f"/api/v1/runs/{run.pk}/steps/sign-off/approve", {"comment": "ship it"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "step_id": "sign-off",
        "status": "approved",
        "step_status": "succeeded",
    }
    decision = Approval.objects.get()
    assert (decision.user, decision.decision, decision.comment) == (
        users["reviewer"],
        "approved",
        "ship it",
    )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    step = api.get(f"/api/v1/runs/{run.pk}/steps/sign-off").json()
    assert [(d["attempt"], d["user"], d["decision"]) for d in step["approvals"]] == [
        (1, "reviewer", "approved")
    ]
    again = api.post(f"/api/v1/runs/{run.pk}/steps/sign-off/approve", format="json")
    assert again.status_code == 409 and again.json()["code"] == "not_waiting"


def test_reject(client_for, users, gated):
    run = start("gated", user=users["owner"])
    api = client_for(users["reviewer"], "run")
    response = api.post(
        f"/api/v1/runs/{run.pk}/steps/sign-off/reject", {"comment": "no"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert StepRun.objects.get(run=run).status == StepStatus.FAILED
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_approval_refusals(client_for, users, gated, chain):
    run = start("gated", user=users["owner"])
    url = f"/api/v1/runs/{run.pk}/steps/sign-off/approve"
    outsider = client_for(users["outsider"], "run")
    response = outsider.post(url, format="json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    owner = client_for(users["owner"], "run")
    response = owner.post(url, format="json")
    assert response.status_code == 403 and response.json()["code"] == "self_approval"
    reader = client_for(users["reviewer"], "read")
    assert reader.post(url, format="json").status_code == 403
    reviewer = client_for(users["reviewer"], "run")
    assert reviewer.post(url, {"comment": ["x"]}, format="json").status_code == 400
    assert (
        reviewer.post(f"/api/v1/runs/{run.pk}/steps/nope/approve", format="json").status_code == 404
    )
    not_gate = start("chain")
    response = reviewer.post(f"/api/v1/runs/{not_gate.pk}/steps/extract/approve", format="json")
    assert response.status_code == 409
    assert not Approval.objects.exists()
    assert StepRun.objects.get(run=run).status == StepStatus.WAITING_APPROVAL


def test_approvals_inbox(api, users, gated, make_workflow):
    make_workflow(GATED_TWO)
    first = start("gated", user=users["owner"])
    second = start("two-keys", user=users["owner"])
    from runs import services

    services.step_approve(run_id=second.pk, step_id="gate", user=users["teammate"])
    body = api.get("/api/v1/approvals").json()
    assert body["count"] == 2
    rows = {r["run_id"]: r for r in body["results"]}
    assert rows[first.pk]["step_id"] == "sign-off" and rows[first.pk]["workflow"] == "gated"
    assert rows[first.pk]["approvals"] == 0 and rows[first.pk]["allow_self_approval"] is False
    assert rows[second.pk]["approvals_required"] == 2 and rows[second.pk]["approvals"] == 1
    assert rows[second.pk]["decisions"][0]["user"] == "teammate"
    assert rows[second.pk]["waiting_since"] and rows[second.pk]["started_by"] == "owner"
    only = api.get("/api/v1/approvals?workflow=two-keys").json()
    assert [r["run_id"] for r in only["results"]] == [second.pk]


def test_approvals_inbox_takes_few_queries(api, users, gated, django_assert_max_num_queries):
    for _ in range(25):
        start("gated", user=users["owner"])
    with django_assert_max_num_queries(5):
        assert api.get("/api/v1/approvals?limit=100").json()["count"] == 25


GATED_TWO = """
name: two-keys
steps:
  - {id: gate, kind: approval, approvals_required: 2}
"""


# --- outputs, preview, profile -----------------------------------------------------------------


def test_outputs_are_a_flat_list(api, chain):
    run = settle(start())
    add_output(run, "transform", "rows", 3)
    add_output(run, "extract", "source", {"db": "main"})
    body = api.get(f"/api/v1/runs/{run.pk}/outputs").json()
    assert body == [
        {"step_id": "extract", "key": "source", "value": {"db": "main"}},
        {"step_id": "transform", "key": "rows", "value": 3},
    ]
    only = api.get(f"/api/v1/runs/{run.pk}/outputs?step_id=transform").json()
    assert only == [{"step_id": "transform", "key": "rows", "value": 3}]


RECORDS = [
    {"id": i, "region": "NESW"[i % 4], "amount": (i * 1.5 if i % 10 else None), "ok": i % 2 == 0}
    for i in range(120)
]


def test_preview_first_50_records(api, chain):
    run = settle(start())
    add_output(run, "transform", "count", 120)
    add_output(run, "transform", "records", RECORDS)
    body = api.get(f"/api/v1/runs/{run.pk}/steps/transform/preview").json()
    assert body["key"] == "records" and body["total"] == 120
    assert set(body["columns"]) == {"id", "region", "amount", "ok"}  # jsonb keeps no key order
    assert body["records"] == RECORDS[:50]
    assert api.get(f"/api/v1/runs/{run.pk}/steps/transform/preview?key=count").status_code == 404
    none = api.get(f"/api/v1/runs/{run.pk}/steps/extract/preview")
    assert none.status_code == 404 and none.json()["code"] == "no_records"


def test_profile_per_column(api, chain):
    run = settle(start())
    add_output(run, "transform", "records", RECORDS + [{"id": 999, "extra": "x"}])
    body = api.get(f"/api/v1/runs/{run.pk}/steps/transform/profile").json()
    assert body["rows"] == 121
    columns = {c["name"]: c for c in body["columns"]}
    assert columns["id"] == {
        "name": "id",
        "type": "integer",
        "count": 121,
        "nulls": 0,
        "distinct": 121,
        "min": 0,
        "max": 999,
    }
    assert columns["amount"]["type"] == "number" and columns["amount"]["nulls"] == 13
    assert columns["amount"]["min"] == 1.5 and columns["amount"]["max"] == 178.5
    assert columns["region"]["distinct"] == 4 and columns["region"]["min"] == "E"
    assert columns["ok"]["type"] == "boolean"
    assert columns["extra"]["nulls"] == 120


# --- structured logs, export, events -----------------------------------------------------------


def test_structured_logs_with_levels(api, chain):
    run = settle(start())
    add_log(run, "extract", "reading\nrea", "d 3 rows\n")  # a line split over two chunks
    add_log(run, "extract", "warning: slow\n", stream="stderr")
    add_log(run, "load", "loaded\n")
    lines = api.get(f"/api/v1/runs/{run.pk}/logs").json()
    assert [(line["step_id"], line["level"], line["message"]) for line in lines] == [
        ("extract", "info", "reading"),
        ("extract", "info", "read 3 rows"),
        ("extract", "error", "warning: slow"),
        ("load", "info", "loaded"),
    ]
    assert lines[0]["run_id"] == run.pk and lines[0]["timestamp"]
    errors = api.get(f"/api/v1/runs/{run.pk}/logs?level=error").json()
    assert [line["message"] for line in errors] == ["warning: slow"]
    load = api.get(f"/api/v1/runs/{run.pk}/logs?step_id=load&limit=5").json()
    assert [line["message"] for line in load] == ["loaded"]
    assert len(api.get(f"/api/v1/runs/{run.pk}/logs?limit=1").json()) == 1
    assert api.get(f"/api/v1/runs/{run.pk}/logs?level=debug").status_code == 400


def test_log_export_text_and_jsonl(api, chain):
    run = settle(start())
    add_log(run, "extract", "hello\n")
    add_log(run, "load", "bye\n", stream="stderr")
    response = api.get(f"/api/v1/runs/{run.pk}/logs/export", HTTP_ACCEPT="text/plain")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert f'filename="run-{run.pk}.log"' in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    assert text.splitlines()[0].endswith("extract#1 stdout | hello")
    assert text.splitlines()[1].endswith("load#1 stderr | bye")

    response = api.get(f"/api/v1/runs/{run.pk}/logs/export?format=jsonl")
    assert response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [(r["step_id"], r["level"], r["message"]) for r in rows] == [
        ("extract", "info", "hello"),
        ("load", "error", "bye"),
    ]
    assert api.get(f"/api/v1/runs/{run.pk}/logs/export?format=pdf").status_code == 400


def test_events_with_after(api, chain):
    run = start()
    api.post(f"/api/v1/runs/{run.pk}/cancel", format="json")
    events = api.get(f"/api/v1/runs/{run.pk}/events").json()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, RunEvent.objects.filter(run=run).count() + 1))
    assert events[0]["type"] == "run.status" and events[0]["run_id"] == run.pk
    assert events[-1]["status"] == "cancelled"
    later = api.get(f"/api/v1/runs/{run.pk}/events?after={seqs[-2]}").json()
    assert [e["seq"] for e in later] == [seqs[-1]]
    assert api.get(f"/api/v1/runs/{run.pk}/events?after=-1").status_code == 400


def test_step_reads_need_a_token(client, chain):
    run = settle(start())
    for path in ("steps", "outputs", "logs", "events", "steps/load/log"):
        response = client.get(f"/api/v1/runs/{run.pk}/{path}")
        assert response.status_code == 401, path
    assert StepOutput.objects.count() == 0
