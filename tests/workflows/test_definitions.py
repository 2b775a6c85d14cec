"""Validation of workflow documents: every rule of SPEC §2, errors naming step and field."""

import pytest

from workflows import definitions
from workflows.definitions import DefinitionError, parse_document, validate
from workflows.models import Workflow, WorkflowVersion
from workflows.services import workflow_save, workflow_sync


def doc(**overrides):
    base = {"name": "wf", "steps": [{"id": "a", "kind": "noop"}]}
    base.update(overrides)
    return base


def messages(document) -> list[str]:
    return [f"{e['path']}: {e['message']}" for e in validate(document).errors]


def test_a_minimal_workflow_is_valid():
    assert validate(doc()).valid


def test_cycle_rejected_with_the_path():
    steps = [
        {"id": "a", "depends_on": ["c"]},
        {"id": "b", "depends_on": ["a"]},
        {"id": "c", "depends_on": ["b"]},
    ]
    (error,) = messages(doc(steps=steps))
    assert error.startswith("steps: dependency cycle:")
    assert "a" in error and "b" in error and "c" in error


def test_unknown_dependency_names_the_step():
    errors = messages(doc(steps=[{"id": "a"}, {"id": "b", "depends_on": ["nope"]}]))
    assert errors == ["steps[1](b).depends_on: unknown step 'nope'"]


def test_duplicate_step_ids():
    errors = messages(doc(steps=[{"id": "a"}, {"id": "a"}]))
    assert errors == ["steps[1](a).id: duplicate step id 'a'"]


@pytest.mark.parametrize("cron", ["61 * * * *", "not a cron", "* * *", ""])
def test_bad_cron(cron):
    errors = messages(doc(schedule={"cron": cron}))
    assert len(errors) == 1 and errors[0].startswith("schedule.cron:")


def test_bad_timezone():
    assert messages(doc(schedule={"cron": "0 3 * * *", "timezone": "Mars/Olympus"})) == [
        "schedule.timezone: unknown timezone 'Mars/Olympus'"
    ]


def test_bad_kind_and_missing_fields():
    errors = messages(
        doc(
            steps=[
                {"id": "a", "kind": "teleport"},
                {"id": "b", "kind": "shell"},
                {"id": "c", "kind": "python", "callable": "not-a-path"},
                {"id": "d", "kind": "http"},
            ]
        )
    )
    assert (
        "steps[0](a).kind: unknown kind 'teleport'; use one of shell, python, http, approval, respond, noop"
        in errors
    )
    assert any(e.startswith("steps[1](b).command:") for e in errors)
    assert any(e.startswith("steps[2](c).callable:") for e in errors)
    assert any(e.startswith("steps[3](d).url:") for e in errors)


def test_invalid_input_schema():
    errors = messages(doc(input_schema={"type": "frobnicate"}))
    assert len(errors) == 1 and errors[0].startswith("input_schema")


@pytest.mark.parametrize(
    "name", ["", "Upper", "-leading", "a" * 101, "sp ace", None, 7, "etl\n", "etl\r\n"]
)
def test_bad_names(name):
    assert any(e.startswith("name:") for e in messages(doc(name=name)))


@pytest.mark.parametrize(
    "step",
    [
        {"id": "a\n", "kind": "noop"},
        {"id": "a", "kind": "python", "callable": "examples.etl.extract\n"},
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_id(step):
    errors = messages(doc(steps=[step]))
    assert any(e.startswith("steps[0]") for e in errors), errors


def test_templates_must_reference_known_upstream_steps():
    steps = [
        {"id": "a", "kind": "noop"},
        {"id": "b", "kind": "shell", "command": ["echo", "{{ steps.ghost.outputs.x }}"]},
        {"id": "c", "kind": "shell", "command": ["echo", "{{ steps.d.outputs.x }}"]},
        {"id": "d", "kind": "noop"},
        {"id": "e", "kind": "shell", "command": ["echo", "{{ secrets.x }}"]},
    ]
    errors = messages(doc(steps=steps))
    assert "steps[1](b): template {{ steps.ghost.outputs.x }}: unknown step 'ghost'" in errors
    assert (
        "steps[2](c): template {{ steps.d.outputs.x }}: step 'd' is not upstream of this step"
        in errors
    )
    assert any("unknown name 'secrets'" in e for e in errors)


def test_retries_and_timeouts_checked():
    errors = messages(
        doc(steps=[{"id": "a", "retries": {"max_attempts": 0}, "timeout": -1}], max_active_runs=0)
    )
    assert "steps[0](a).retries.max_attempts: max_attempts must be an integer 1-100" in errors
    assert "steps[0](a).timeout: timeout must be a positive number of seconds" in errors
    assert "max_active_runs: max_active_runs must be an integer of at least 1" in errors


def test_parse_errors_are_clear():
    with pytest.raises(DefinitionError) as exc:
        parse_document("name: [unclosed")
    assert "not valid YAML or JSON" in str(exc.value)
    with pytest.raises(DefinitionError):
        parse_document("- just\n- a list\n")
    assert parse_document('{"name": "j", "steps": []}')["name"] == "j"


def test_input_validation_names_the_field():
    schema = {"type": "object", "required": ["pr"], "properties": {"pr": {"type": "integer"}}}
    assert definitions.validate_input(schema, {"pr": 1}) == []
    errors = definitions.validate_input(schema, {"pr": "x"})
    assert errors == [{"path": "input.pr", "message": "'x' is not of type 'integer'"}]
    assert definitions.validate_input(None, ["not", "an", "object"])[0]["path"] == "input"


@pytest.mark.django_db
def test_each_change_makes_a_new_immutable_version():
    wf, created, changed = workflow_save(document=doc())
    assert created and changed
    _, created, changed = workflow_save(document=doc())
    assert not created and not changed
    wf, _, changed = workflow_save(document=doc(description="new"))
    assert changed
    versions = list(WorkflowVersion.objects.filter(workflow=wf).order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    assert versions[0].dag_hash != versions[1].dag_hash
    assert versions[0].definition == doc()


@pytest.mark.django_db
def test_invalid_document_stores_nothing():
    with pytest.raises(DefinitionError):
        workflow_save(document=doc(steps=[{"id": "a", "depends_on": ["a"]}]))
    assert not Workflow.objects.exists()


@pytest.mark.django_db
def test_sync_loads_the_examples_and_reports_bad_files(tmp_path, settings):
    reports = workflow_sync(directory=settings.WORKFLOWS_DIR)
    assert all(r["ok"] for r in reports), reports
    assert {
        "code-review-pipeline",
        "etl-daily",
        "flaky-retry",
        "wide-fanout",
        "outputs-handoff",
    } <= set(Workflow.objects.values_list("name", flat=True))
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  - {id: a, depends_on: [zz]}\n")
    (report,) = workflow_sync(directory=tmp_path)
    assert report["ok"] is False
    assert report["errors"][0]["path"] == "steps[0](a).depends_on"
