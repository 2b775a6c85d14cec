"""Workflows: list, create from JSON or YAML, read, replace, patch, delete, validate,
dry-run."""

import pytest
import yaml

from runs.models import LogChunk, Run, StepRun
from runs.status import RunStatus
from tests.api.conftest import CHAIN, add_log, settle, start
from workflows.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

NEW = {
    "name": "greet",
    "description": "say hello",
    "input_schema": {
        "type": "object",
        "required": ["who"],
        "properties": {"who": {"type": "string"}},
    },
    "steps": [
        {"id": "hello", "kind": "shell", "command": ["echo", "hello {{ input.who }}"]},
        {
            "id": "script",
            "kind": "shell",
            "command": "echo {{ input.who }}",
            "depends_on": ["hello"],
        },
        {
            "id": "notify",
            "kind": "http",
            "url": "https://example.invalid/{{ input.who }}",
            "json": {"who": "{{ input.who }}", "out": "{{ steps.hello.outputs.line }}"},
            "depends_on": ["hello"],
        },
        {"id": "done", "kind": "noop", "depends_on": ["script", "notify"]},
    ],
}


def test_create_from_json(api, users):
    response = api.post("/api/v1/workflows", NEW, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "greet" and body["version"] == 1
    assert body["step_ids"] == ["hello", "script", "notify", "done"]
    assert [v["number"] for v in body["versions"]] == [1]
    assert body["versions"][0]["created_by"] == "owner"
    workflow = Workflow.objects.get(name="greet")
    assert workflow.definition == NEW and workflow.source == "api"


def test_create_from_yaml(api):
    response = api.generic(
        "POST", "/api/v1/workflows", yaml.safe_dump(NEW), content_type="application/yaml"
    )
    assert response.status_code == 201, response.json()
    assert Workflow.objects.get().definition == NEW


def test_create_lists_every_validation_error(api, db):
    bad = {
        "name": "Bad Name",
        "steps": [
            {"id": "a", "kind": "teleport"},
            {"id": "b", "depends_on": ["ghost"]},
            {"id": "b"},
        ],
    }
    response = api.post("/api/v1/workflows", bad, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_definition"
    paths = [e["path"] for e in body["details"]["errors"]]
    assert "name" in paths
    assert any("kind" in p for p in paths) and any("depends_on" in p for p in paths)
    assert any(p.endswith(".id") for p in paths)
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    "content, content_type",
    [
        ("[1, 2]", "application/json"),
        ("name: [unclosed", "application/yaml"),
        ("{", "application/json"),
    ],
)
def test_create_refuses_what_is_not_a_document(api, db, content, content_type):
    response = api.generic("POST", "/api/v1/workflows", content, content_type=content_type)
    assert response.status_code == 400
    assert not Workflow.objects.exists()


def test_create_an_existing_name_is_409(api, chain):
    response = api.post("/api/v1/workflows", yaml.safe_load(CHAIN), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "workflow_exists"
    assert WorkflowVersion.objects.filter(workflow=chain).count() == 1


def test_writes_need_admin_scope(client_for, users, chain):
    runner = client_for(users["owner"], "read", "run")
    assert runner.post("/api/v1/workflows", NEW, format="json").status_code == 403
    assert runner.delete("/api/v1/workflows/chain").status_code == 403
    assert (
        runner.patch("/api/v1/workflows/chain", {"description": "x"}, format="json").status_code
        == 403
    )
    assert runner.get("/api/v1/workflows/chain").status_code == 200
    assert Workflow.objects.count() == 1


def test_list_filter_and_sort(api, chain, make_workflow):
    make_workflow("name: nightly\nschedule: '0 3 * * *'\nsteps: [{id: a}]")
    make_workflow(
        "name: paused-cron\nschedule: {cron: '0 3 * * *', enabled: false}\nsteps: [{id: a}]"
    )
    settle(start("chain"))
    body = api.get("/api/v1/workflows").json()
    assert [w["name"] for w in body["results"]] == ["chain", "nightly", "paused-cron"]
    chain_row = body["results"][0]
    assert chain_row["last_status"] == "succeeded" and chain_row["step_count"] == 3
    nightly = body["results"][1]
    assert nightly["schedule"] == {"cron": "0 3 * * *"} and nightly["next_run_at"]

    def names(query):
        return [w["name"] for w in api.get("/api/v1/workflows" + query).json()["results"]]

    assert names("?has_schedule=true") == ["nightly"]
    assert names("?has_schedule=false") == ["chain", "paused-cron"]
    assert names("?q=three steps") == ["chain"]
    assert names("?sort=-name") == ["paused-cron", "nightly", "chain"]
    assert names("?sort=-last_run_at")[0] == "chain"
    assert api.get("/api/v1/workflows?sort=size").status_code == 400


def test_list_takes_few_queries(api, make_workflow, django_assert_max_num_queries):
    for i in range(30):
        make_workflow(f"name: wf-{i}\nsteps: [{{id: a}}]")
        start(f"wf-{i}")
    with django_assert_max_num_queries(4):
        assert api.get("/api/v1/workflows?limit=100").json()["count"] == 30


def test_detail(api, chain):
    run = settle(start("chain"), RunStatus.FAILED, failed="load")
    body = api.get("/api/v1/workflows/chain").json()
    assert body["step_ids"] == ["extract", "transform", "load"]
    assert body["steps"][1] == {"id": "transform", "kind": "noop", "depends_on": ["extract"]}
    assert body["last_run_id"] == run.pk and body["last_status"] == "failed"
    assert body["schedule"] is None and body["next_run_at"] is None
    assert body["definition"]["name"] == "chain"
    missing = api.get("/api/v1/workflows/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "workflow_not_found"


def test_put_replaces_with_a_new_version(api, chain):
    document = yaml.safe_load(CHAIN)
    document["steps"].append({"id": "report", "kind": "noop", "depends_on": ["load"]})
    response = api.put("/api/v1/workflows/chain", document, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["version"] == 2
    assert [v["number"] for v in response.json()["versions"]] == [2, 1]
    chain.refresh_from_db()
    assert chain.steps[-1]["id"] == "report"
    same = api.put("/api/v1/workflows/chain", document, format="json")
    assert same.json()["version"] == 2  # unchanged content makes no version


def test_put_creates_and_checks_the_name(api, db):
    response = api.put("/api/v1/workflows/greet", NEW, format="json")
    assert response.status_code == 201
    wrong = api.put("/api/v1/workflows/other", NEW, format="json")
    assert wrong.status_code == 400
    assert "does not match" in wrong.json()["error"]
    assert list(Workflow.objects.values_list("name", flat=True)) == ["greet"]


def test_patch_merges_into_the_definition(api, chain):
    response = api.patch(
        "/api/v1/workflows/chain",
        {"description": "patched", "max_active_runs": 2, "input_schema": None},
        format="json",
    )
    assert response.status_code == 200, response.json()
    chain.refresh_from_db()
    assert chain.description == "patched"
    assert chain.definition["max_active_runs"] == 2
    assert "input_schema" not in chain.definition
    assert chain.current_version.number == 2
    bad = api.patch("/api/v1/workflows/chain", {"overlap": "sometimes"}, format="json")
    assert bad.status_code == 400
    chain.refresh_from_db()
    assert chain.current_version.number == 2
    assert (
        api.patch("/api/v1/workflows/nope", {"description": "x"}, format="json").status_code == 404
    )


def test_delete_removes_runs_too(api, chain):
    run = settle(start("chain"))
    add_log(run, "load", "done\n")
    response = api.delete("/api/v1/workflows/chain")
    assert response.status_code == 200
    assert response.json() == {"name": "chain", "runs_removed": 1}
    assert not Workflow.objects.exists() and not Run.objects.exists()
    assert not StepRun.objects.exists() and not LogChunk.objects.exists()
    assert api.delete("/api/v1/workflows/chain").status_code == 404


def test_delete_with_an_unfinished_run_is_409(api, chain):
    start("chain")
    response = api.delete("/api/v1/workflows/chain")
    assert response.status_code == 409
    assert response.json()["code"] == "workflow_busy"
    assert Workflow.objects.filter(name="chain").exists()


def test_validate(api, db):
    ok = api.post("/api/v1/workflows/validate", {**NEW, "colour": "blue"}, format="json").json()
    assert ok["valid"] is True and ok["errors"] == []
    assert ok["warnings"] == [{"path": "colour", "message": "unknown field 'colour' is ignored"}]
    bad = api.post("/api/v1/workflows/validate", {"name": "x", "steps": []}, format="json").json()
    assert bad["valid"] is False and bad["errors"][0]["path"] == "steps"
    unparsable = api.generic(
        "POST", "/api/v1/workflows/validate", "steps: [", content_type="application/yaml"
    )
    assert unparsable.status_code == 200 and unparsable.json()["valid"] is False
    assert not Workflow.objects.exists()


def test_validate_a_named_workflow(api, chain, client_for, users):
    reader = client_for(users["teammate"], "read")
    current = reader.post("/api/v1/workflows/chain/validate", format="json").json()
    assert current == {"valid": True, "errors": [], "warnings": []}
    renamed = reader.post("/api/v1/workflows/chain/validate", NEW, format="json").json()
    assert renamed["valid"] is False
    assert any("does not match" in e["message"] for e in renamed["errors"])
    assert reader.post("/api/v1/workflows/nope/validate", format="json").status_code == 404


def test_dry_run_renders_the_plan_and_stores_nothing(api, db):
    api.post("/api/v1/workflows", NEW, format="json")
    response = api.post("/api/v1/workflows/greet/dry-run", {"input": {"who": "ann"}}, format="json")
    assert response.status_code == 200, response.json()
    plan = response.json()
    assert plan["layers"] == [["hello"], ["script", "notify"], ["done"]]
    steps = {s["step_id"]: s for s in plan["steps"]}
    assert steps["hello"]["args"]["command"] == ["echo", "hello ann"]
    assert steps["script"]["args"]["command"] == 'echo "${TRELLIS_ARG_1}"'
    assert steps["script"]["args"]["env"] == {"TRELLIS_ARG_1": "ann"}
    assert steps["notify"]["args"]["url"] == "https://example.invalid/ann"
    assert steps["notify"]["args"]["json"] == {
        "who": "ann",
        "out": "{{ steps.hello.outputs.line }}",
    }
    assert steps["done"]["layer"] == 2 and steps["done"]["depends_on"] == ["script", "notify"]
    assert not Run.objects.exists()


def test_dry_run_refuses_bad_input(api, db):
    api.post("/api/v1/workflows", NEW, format="json")
    response = api.post("/api/v1/workflows/greet/dry-run", {"input": {}}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_input"
    assert "who" in response.json()["error"]
    assert (
        api.post("/api/v1/workflows/greet/dry-run", {"input": 3}, format="json").status_code == 400
    )
    assert api.post("/api/v1/workflows/nope/dry-run", {}, format="json").status_code == 404
    assert not Run.objects.exists()
