"""Runs: start, idempotency, bulk, list with filters, detail, cancel, resume, rerun, bulk
actions and the calendar."""

import pytest
from django.utils import timezone

from runs import selectors
from runs.engine import transitions
from runs.models import Run, RunEvent, StepRun
from runs.status import RunStatus, StepStatus
from tests.api.conftest import settle, start

pytestmark = pytest.mark.django_db


# --- start ---------------------------------------------------------------------------------


def test_start_a_run(api, chain, users):
    response = api.post("/api/v1/runs", {"workflow": "chain", "input": {"n": 1}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {"run_id", "status"}
    run = Run.objects.get(pk=body["run_id"])
    assert run.input == {"n": 1}
    assert run.trigger == "api"
    assert run.created_by == users["owner"]
    assert body["status"] == run.status == RunStatus.RUNNING


def test_start_under_a_workflow_with_params_and_start_at(api, chain):
    later = (timezone.now() + timezone.timedelta(hours=1)).isoformat()
    response = api.post(
        "/api/v1/workflows/chain/runs",
        {"params": {"env": "prod"}, "start_at": later},
        format="json",
    )
    assert response.status_code == 201
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.status == RunStatus.SCHEDULED == response.json()["status"]
    assert run.params == {"env": "prod"}
    assert not StepRun.objects.filter(run=run).exists()


def test_same_idempotency_key_returns_the_first_run(api, chain):
    payload = {"workflow": "chain", "input": {"n": 1}, "idempotency_key": "deploy-42"}
    first = api.post("/api/v1/runs", payload, format="json")
    again = api.post("/api/v1/runs", payload, format="json")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["run_id"] == first.json()["run_id"]
    assert [s["step_id"] for s in again.json()["steps"]] == ["extract", "transform", "load"]
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"workflow": "chain", "input": {"n": "one"}}, "input.n"),
        ({"workflow": "chain", "input": "text"}, "input"),
        ({"input": {}}, "workflow"),
        ({"workflow": "chain", "start_at": "tomorrow"}, "start_at"),
        ({"workflow": "chain", "params": [1]}, "params"),
    ],
)
def test_start_refuses_bad_input(api, chain, payload, fragment):
    response = api.post("/api/v1/runs", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert fragment in body["error"]
    assert not Run.objects.exists()


def test_start_unknown_workflow_is_404(api, db):
    response = api.post("/api/v1/runs", {"workflow": "nope"}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "workflow_not_found"
    response = api.post("/api/v1/workflows/nope/runs", {}, format="json")
    assert response.status_code == 404


def test_start_with_bad_json_is_400(api, chain):
    response = api.post("/api/v1/runs", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert not Run.objects.exists()


def test_wait_answers_202_while_the_run_is_going(api, chain):
    response = api.post("/api/v1/runs?wait=1", {"workflow": "chain"}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == RunStatus.RUNNING
    assert api.post("/api/v1/runs?wait=61", {"workflow": "chain"}, format="json").status_code == 400


def test_wait_reads_the_run_soon_after_the_start_then_less_often(chain, monkeypatch):
    """A short run is answered a few milliseconds after it ends: the first reads come 5,
    10, 20 and 40 ms apart, then once per 0.1 s."""
    run = start()
    clock, pauses = [0.0], []

    def sleep(seconds):
        pauses.append(round(seconds, 3))
        clock[0] += seconds

    monkeypatch.setattr(selectors.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(selectors.time, "sleep", sleep)
    assert selectors.run_wait(run.pk, 0.5).status == RunStatus.RUNNING  # never finishes
    assert pauses == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1, 0.1, 0.045]


def test_wait_answers_202_for_a_run_waiting_for_approval_at_once(api, gated):
    started = timezone.now()
    response = api.post("/api/v1/runs?wait=30", {"workflow": "gated"}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == RunStatus.WAITING
    assert (timezone.now() - started).total_seconds() < 5


def test_wait_does_not_hold_for_a_run_scheduled_later(api, chain):
    later = (timezone.now() + timezone.timedelta(hours=1)).isoformat()
    started = timezone.now()
    response = api.post(
        "/api/v1/runs?wait=30", {"workflow": "chain", "start_at": later}, format="json"
    )
    assert response.status_code == 202 and response.json()["status"] == RunStatus.SCHEDULED
    assert (timezone.now() - started).total_seconds() < 5


def test_start_needs_run_scope(client_for, users, chain):
    reader = client_for(users["owner"], "read")
    response = reader.post("/api/v1/runs", {"workflow": "chain"}, format="json")
    assert response.status_code == 403
    assert not Run.objects.exists()


# --- bulk ----------------------------------------------------------------------------------


def test_bulk_creates_every_run(api, chain, django_assert_max_num_queries):
    inputs = [{"n": i} for i in range(1000)]
    with django_assert_max_num_queries(100):  # created in batches, not one by one
        response = api.post(
            "/api/v1/runs/bulk", {"workflow": "chain", "inputs": inputs}, format="json"
        )
    assert response.status_code == 201
    run_ids = response.json()["run_ids"]
    assert len(run_ids) == 1000 == len(set(run_ids))
    assert Run.objects.filter(trigger="bulk").count() == 1000
    assert sorted(Run.objects.values_list("input__n", flat=True)) == list(range(1000))


def test_bulk_one_bad_input_creates_nothing_and_names_its_index(api, chain):
    inputs = [{"n": 1}, {"n": 2}, {"n": "three"}, {"n": 4}]
    response = api.post("/api/v1/runs/bulk", {"workflow": "chain", "inputs": inputs}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["details"]["index"] == 2
    assert "#2" in body["error"]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"workflow": "chain", "inputs": []},
        {"workflow": "chain", "inputs": {"n": 1}},
        {"workflow": "chain", "inputs": [{"n": 1}, "two"]},
        {"inputs": [{}]},
    ],
)
def test_bulk_refuses_malformed_requests(api, chain, payload):
    response = api.post("/api/v1/runs/bulk", payload, format="json")
    assert response.status_code == 400
    assert not Run.objects.exists()


def test_bulk_unknown_workflow_is_404(api, db):
    response = api.post("/api/v1/runs/bulk", {"workflow": "nope", "inputs": [{}]}, format="json")
    assert response.status_code == 404


# --- list ----------------------------------------------------------------------------------


def test_list_envelope_and_default_order(api, chain):
    runs = [start() for _ in range(3)]
    response = api.get("/api/v1/runs")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert [r["run_id"] for r in body["results"]] == [r.pk for r in reversed(runs)]
    row = body["results"][0]
    assert row["workflow"] == "chain" and row["status"] == "running"
    assert row["trigger"] == "api"


def test_list_filters(api, chain, gated, users):
    failed = settle(start(user=users["owner"]), RunStatus.FAILED, failed="transform")
    succeeded = settle(start(user=users["teammate"]))
    waiting = start("gated")
    cli = start(trigger="cli")

    def ids(query):
        response = api.get("/api/v1/runs" + query)
        assert response.status_code == 200, response.json()
        return {r["run_id"] for r in response.json()["results"]}

    assert ids("?status=failed") == {failed.pk}
    assert ids("?status=failed,succeeded") == {failed.pk, succeeded.pk}
    assert ids("?workflow=gated") == {waiting.pk}
    assert ids("?trigger=cli") == {cli.pk}
    assert ids("?created_by=teammate") == {succeeded.pk}
    assert ids(f"?q={cli.pk[:26]}") == {cli.pk}
    Run.objects.filter(pk=failed.pk).update(created_at=timezone.now() - timezone.timedelta(days=3))
    day_ago = (timezone.now() - timezone.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"?created_before={day_ago}") == {failed.pk}
    assert failed.pk not in ids(f"?created_after={day_ago}")
    assert ids("?workflow=gated&status=failed") == set()


def test_list_refuses_unknown_filter_values(api, db):
    for query in ("?status=broken", "?trigger=carrier-pigeon", "?sort=colour", "?created_after=x"):
        response = api.get("/api/v1/runs" + query)
        assert response.status_code == 400, query
        assert response.json()["code"] == "invalid"


def test_list_sort_and_paging(api, chain):
    runs = [settle(start(), ago=10 - i) for i in range(5)]
    Run.objects.filter(pk=runs[2].pk).update(duration_ms=99_000)
    response = api.get("/api/v1/runs?sort=-duration&limit=2")
    body = response.json()
    assert body["results"][0]["run_id"] == runs[2].pk
    assert body["count"] == 5 and body["next"] and body["previous"] is None
    oldest_first = api.get("/api/v1/runs?sort=created_at&limit=2&offset=2").json()
    assert [r["run_id"] for r in oldest_first["results"]] == [runs[2].pk, runs[3].pk]
    capped = api.get("/api/v1/runs?limit=5000").json()
    assert capped["count"] == 5


def test_count_is_capped_on_huge_lists(api, chain, monkeypatch):
    from api import pagination

    monkeypatch.setattr(pagination, "COUNT_CAP", 3)
    runs = [settle(start(), ago=10 - i) for i in range(6)]
    body = api.get("/api/v1/runs?limit=2").json()
    assert body["count"] == 4 and body["count_capped"] is True  # "more than 3"
    assert body["next"]
    last = api.get("/api/v1/runs?limit=2&offset=4").json()
    assert [r["run_id"] for r in last["results"]] == [runs[1].pk, runs[0].pk]
    assert "count_capped" not in last and last["count"] == 6 and last["next"] is None


def test_list_runs_a_constant_number_of_queries(api, chain, users, django_assert_max_num_queries):
    for _ in range(3):
        start(user=users["owner"])
    with django_assert_max_num_queries(4):
        assert len(api.get("/api/v1/runs").json()["results"]) == 3
    from runs.services import run_bulk_start

    run_bulk_start(workflow="chain", inputs=[{}] * 300, user=users["owner"])
    with django_assert_max_num_queries(4):
        assert len(api.get("/api/v1/runs?limit=1000").json()["results"]) == 303
    with django_assert_max_num_queries(4):
        assert api.get("/api/v1/workflows/chain/runs?limit=1000").json()["count"] == 303


def test_workflow_runs_list_and_latest(api, chain, gated):
    first = start("chain")
    start("gated")
    latest = start("chain")
    body = api.get("/api/v1/workflows/chain/runs").json()
    assert [r["run_id"] for r in body["results"]] == [latest.pk, first.pk]
    assert api.get("/api/v1/workflows/chain/runs?status=failed").json()["count"] == 0
    detail = api.get("/api/v1/workflows/chain/runs/latest")
    assert detail.status_code == 200
    assert detail.json()["run_id"] == latest.pk
    assert api.get("/api/v1/workflows/nope/runs").status_code == 404
    assert api.get("/api/v1/workflows/nope/runs/latest").status_code == 404


def test_latest_of_a_workflow_without_runs_is_404(api, chain):
    response = api.get("/api/v1/workflows/chain/runs/latest")
    assert response.status_code == 404
    assert response.json()["code"] == "run_not_found"


# --- detail ----------------------------------------------------------------------------------


def test_detail_has_steps(api, chain):
    run = settle(start(input={"n": 3}), RunStatus.FAILED, failed="transform")
    response = api.get(f"/api/v1/runs/{run.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["run_id"] == run.pk and body["status"] == "failed"
    assert body["input"] == {"n": 3} and body["version"] == 1
    assert body["last_seq"] == run.event_seq
    steps = {s["step_id"]: s for s in body["steps"]}
    assert list(steps) == ["extract", "transform", "load"]
    assert steps["transform"]["status"] == "failed"
    assert steps["transform"]["attempts"] == 1
    assert steps["transform"]["duration_ms"] == 2000
    assert steps["load"]["status"] == "skipped"
    assert set(steps["extract"]) >= {"started_at", "finished_at", "row_count"}


def test_detail_of_a_run_not_started_shows_planned_steps(api, chain):
    later = timezone.now() + timezone.timedelta(hours=1)
    run = start(start_at=later)
    steps = api.get(f"/api/v1/runs/{run.pk}").json()["steps"]
    assert [(s["step_id"], s["status"]) for s in steps] == [
        ("extract", "pending"),
        ("transform", "pending"),
        ("load", "pending"),
    ]


def test_unknown_run_is_404(api, db):
    for path in ("", "/steps", "/outputs", "/logs", "/events", "/steps/x/log"):
        response = api.get(f"/api/v1/runs/0123456789abcdef{path}")
        assert response.status_code == 404, path
        assert response.json()["code"] == "run_not_found"
    response = api.post("/api/v1/runs/0123456789abcdef/cancel", {}, format="json")
    assert response.status_code == 404


# --- cancel, resume, rerun -------------------------------------------------------------------


def test_cancel_a_running_run(api, chain):
    run = start()
    response = api.post(f"/api/v1/runs/{run.pk}/cancel", {"grace_seconds": 0}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancel_grace_seconds == 0
    assert not StepRun.objects.filter(run=run, status=StepStatus.QUEUED).exists()
    assert RunEvent.objects.filter(run=run, status="cancelled", type="run.status").exists()


def test_cancel_waiting_for_running_steps(api, chain):
    run = start()
    (step,) = transitions.step_claim(run.pk, "worker-1")  # its first step is running
    url = f"/api/v1/runs/{run.pk}/cancel"
    response = api.post(url, {"wait_for_running": True}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "running"
    detail = api.get(f"/api/v1/runs/{run.pk}").json()
    assert detail["cancel_requested_at"] is not None
    steps = {s["step_id"]: s["status"] for s in detail["steps"]}
    assert steps[step.step_id] == "running"
    assert set(steps.values()) == {"running", "cancelled"}

    transitions.step_finish(step, transitions.Outcome(ok=True))
    run.refresh_from_db()
    assert (run.status, run.reason) == (RunStatus.CANCELLED, "cancelled")
    assert StepRun.objects.get(pk=step.pk).status == StepStatus.SUCCEEDED
    assert api.post(url, format="json").status_code == 409


def test_cancel_a_finished_run_is_409(api, chain):
    run = settle(start())
    response = api.post(f"/api/v1/runs/{run.pk}/cancel", format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "run_finished"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_cancel_refuses_bad_options(api, chain):
    run = start()
    for payload in ({"grace_seconds": -1}, {"grace_seconds": "soon"}, {"wait_for_running": "x"}):
        assert api.post(f"/api/v1/runs/{run.pk}/cancel", payload, format="json").status_code == 400
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


def test_resume_a_failed_run(api, chain):
    run = settle(start(), RunStatus.FAILED, failed="transform")
    response = api.post(f"/api/v1/runs/{run.pk}/resume", format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["run_id"] == run.pk and body["status"] not in ("failed",)
    steps = dict(StepRun.objects.filter(run=run).values_list("step_id", "status"))
    assert steps["extract"] == StepStatus.SUCCEEDED
    assert steps["transform"] in (StepStatus.PENDING, StepStatus.QUEUED)


def test_resume_a_succeeded_run_is_409(api, chain):
    run = settle(start())
    response = api.post(f"/api/v1/runs/{run.pk}/resume", format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "not_resumable"


def test_rerun_from_a_step(api, chain):
    run = settle(start())
    plan = api.post(
        f"/api/v1/runs/{run.pk}/rerun", {"from_step": "transform", "dry_run": True}, format="json"
    )
    assert plan.status_code == 200
    assert plan.json() == {"run_id": run.pk, "dry_run": True, "steps": ["transform", "load"]}
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED  # a dry run changes nothing

    response = api.post(f"/api/v1/runs/{run.pk}/rerun", {"from_step": "transform"}, format="json")
    assert response.status_code == 200
    steps = dict(StepRun.objects.filter(run=run).values_list("step_id", "status"))
    assert steps["extract"] == StepStatus.SUCCEEDED
    assert steps["load"] == StepStatus.PENDING


def test_rerun_errors(api, chain):
    running = start()
    response = api.post(f"/api/v1/runs/{running.pk}/rerun", {"from_step": "load"}, format="json")
    assert response.status_code == 409
    done = settle(start())
    response = api.post(f"/api/v1/runs/{done.pk}/rerun", {"from_step": "nope"}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "step_not_found"
    assert api.post(f"/api/v1/runs/{done.pk}/rerun", {}, format="json").status_code == 400


# --- bulk actions ----------------------------------------------------------------------------


def test_bulk_cancel_by_ids_reports_each_run(api, chain):
    going, other = start(), start()
    finished = settle(start())
    response = api.post(
        "/api/v1/runs/bulk-cancel",
        {"run_ids": [going.pk, finished.pk, "feedfeed", other.pk], "grace_seconds": 0},
        format="json",
    )
    assert response.status_code == 200
    results = {r["run_id"]: r for r in response.json()}
    assert results[going.pk] == {"run_id": going.pk, "ok": True, "status": "cancelled"}
    assert results[finished.pk]["ok"] is False and results[finished.pk]["code"] == "run_finished"
    assert results["feedfeed"]["code"] == "run_not_found"
    assert Run.objects.filter(status=RunStatus.CANCELLED).count() == 2


def test_bulk_cancel_and_resume_by_filter(api, chain, gated):
    chain_runs = [start() for _ in range(3)]
    gated_run = start("gated")
    response = api.post(
        "/api/v1/runs/bulk-cancel",
        {"filter": {"workflow": "chain", "status": ["running"]}},
        format="json",
    )
    assert response.status_code == 200
    assert {r["run_id"] for r in response.json()} == {r.pk for r in chain_runs}
    gated_run.refresh_from_db()
    assert gated_run.status == RunStatus.WAITING

    response = api.post(
        "/api/v1/runs/bulk-resume", {"filter": {"status": "cancelled"}}, format="json"
    )
    assert response.status_code == 200
    assert all(r["ok"] for r in response.json()) and len(response.json()) == 3
    assert not Run.objects.filter(status=RunStatus.CANCELLED).exists()


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"run_ids": ["a"], "filter": {"status": "running"}},
        {"filter": {}},
        {"filter": {"stauts": "running"}},  # a typo never selects every run
        {"filter": {"status": "sleeping"}},
        {"run_ids": "abc"},
    ],
)
def test_bulk_actions_refuse_bad_requests(api, chain, payload):
    run = start()
    for action in ("bulk-cancel", "bulk-resume"):
        response = api.post(f"/api/v1/runs/{action}", payload, format="json")
        assert response.status_code == 400, (action, response.json())
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


# --- calendar --------------------------------------------------------------------------------


def test_calendar(api, chain):
    settle(start())
    settle(start(), RunStatus.FAILED, failed="load")
    old = settle(start())
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(days=2))
    days = api.get("/api/v1/runs/calendar?days=7").json()
    assert len(days) == 7
    today = timezone.localdate().isoformat()
    assert days[-1] == {"date": today, "succeeded": 1, "failed": 1, "total": 2}
    assert days[-3]["succeeded"] == 1
    assert len(api.get("/api/v1/runs/calendar").json()) == 90
    assert api.get("/api/v1/runs/calendar?days=366").status_code == 400
    assert api.get("/api/v1/runs/calendar?days=abc").status_code == 400
