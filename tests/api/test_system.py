"""Health, system info, purge, dashboard and search."""

import pytest
from django.utils import timezone

from runs.models import LogChunk, Run, RunEvent, StepOutput, StepRun
from runs.status import RunStatus
from tests.api.conftest import add_log, add_output, settle, start

pytestmark = pytest.mark.django_db


def test_health_needs_no_auth(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert set(body) == {"status", "version", "uptime_seconds", "database", "broker", "workers"}


def test_system_info(api, chain, gated):
    start("chain")
    start("gated")
    body = api.get("/api/v1/system/info").json()
    assert body["workflows"] == 2
    assert body["active_runs"] == 2 and body["queued_runs"] == 0
    assert body["max_concurrent_runs"] >= 1
    assert body["db_size_bytes"] > 0 and body["db_size"].split()[1] in ("KB", "MB", "GB")
    assert body["database"] in ("sqlite", "postgresql")


def test_purge_removes_old_finished_runs_with_everything_they_hold(api, chain):
    old = settle(start(), ago=40 * 86400)
    add_log(old, "load", "x" * 1000)
    add_output(old, "load", "rows", [1, 2, 3])
    recent = settle(start())
    going = start()
    Run.objects.filter(pk=going.pk).update(created_at=timezone.now() - timezone.timedelta(days=90))
    response = api.post("/api/v1/system/purge", {"older_than": "30d"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["removed"] == 1
    assert body["freed_bytes"] >= 1000 and body["freed"].endswith(("B", "KB"))
    assert set(Run.objects.values_list("pk", flat=True)) == {recent.pk, going.pk}
    assert not StepRun.objects.filter(run_id=old.pk).exists()
    assert not RunEvent.objects.filter(run_id=old.pk).exists()
    assert not LogChunk.objects.exists() and not StepOutput.objects.exists()
    again = api.post("/api/v1/system/purge", {"days": 0}, format="json").json()
    assert again["removed"] == 1  # the recent finished run; the running one stays
    assert list(Run.objects.values_list("pk", flat=True)) == [going.pk]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"older_than": "soon"},
        {"days": -1},
        {"older_than": "30d", "days": 3},
        {"days": "x"},
        {"older_than": "999999w"},
    ],
)
def test_purge_refuses_bad_requests(api, chain, payload):
    settle(start(), ago=400 * 86400)
    response = api.post("/api/v1/system/purge", payload, format="json")
    assert response.status_code == 400
    assert Run.objects.count() == 1


def test_purge_needs_admin_scope(client_for, users, chain):
    settle(start(), ago=400 * 86400)
    runner = client_for(users["owner"], "read", "run")
    response = runner.post("/api/v1/system/purge", {"days": 1}, format="json")
    assert response.status_code == 403
    assert Run.objects.count() == 1


def test_dashboard(api, chain, gated, django_assert_max_num_queries):
    settle(start("chain"))
    settle(start("chain"), RunStatus.FAILED, failed="load")
    settle(start("gated"), RunStatus.FAILED)
    settle(start("gated"), RunStatus.FAILED)
    waiting = start("gated")
    with django_assert_max_num_queries(8):
        body = api.get("/api/v1/dashboard").json()
    workflows = {w["name"]: w for w in body["workflows"]}
    assert workflows["chain"]["runs_7d"] == 2 and workflows["chain"]["failed_7d"] == 1
    assert workflows["gated"]["last_run_id"] == waiting.pk
    assert body["recent_runs"][0]["run_id"] == waiting.pk
    assert len(body["trends"]) == 7
    assert body["trends"][-1] == {
        "date": timezone.localdate().isoformat(),
        "succeeded": 1,
        "failed": 3,
        "total": 5,
    }
    assert body["top_failing"][0] == {
        "workflow": "gated",
        "failed": 2,
        "total": 3,
        "failure_rate": 0.667,
    }
    assert body["active"]["waiting"] == 1


def test_search(api, chain, gated):
    run = settle(start("chain"))
    body = api.get("/api/v1/search?q=extr").json()
    assert body["steps"] == [{"workflow": "chain", "step_id": "extract", "kind": "noop"}]
    assert body["events"] and all(e["step_id"] == "extract" for e in body["events"])
    by_id = api.get(f"/api/v1/search?q={run.pk[:20]}").json()
    assert [r["run_id"] for r in by_id["runs"]] == [run.pk]
    by_name = api.get("/api/v1/search?q=GATE&limit=1").json()
    assert by_name["workflows"] == [{"name": "gated", "description": ""}]
    assert api.get("/api/v1/search").status_code == 400
    assert api.get("/api/v1/search?q=x&limit=101").status_code == 400
