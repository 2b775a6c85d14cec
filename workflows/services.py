"""Writes to workflows: every change of definition makes a new immutable version."""

from pathlib import Path

from django.db import transaction

from runs.engine.errors import Conflict, NotFound
from workflows import definitions
from workflows.models import Workflow, WorkflowVersion

WORKFLOW_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def workflow_save(*, document: dict, source: str = "api", user=None, name: str | None = None):
    """Create or update a workflow; returns (workflow, created, version_changed).

    Raises DefinitionError with every problem found. `name`, when given, must match.
    """
    definitions.validate_or_raise(document)
    if name is not None and document["name"] != name:
        raise definitions.DefinitionError(
            [{"path": "name", "message": f"name {document['name']!r} does not match {name!r}"}]
        )
    digest = definitions.dag_hash(document)
    with transaction.atomic():
        workflow, created = Workflow.objects.select_for_update().get_or_create(
            name=document["name"],
            defaults={"definition": document, "source": source},
        )
        current = workflow.current_version
        if current is not None and current.dag_hash == digest:
            return workflow, created, False
        number = (current.number if current else 0) + 1
        version = WorkflowVersion.objects.create(
            workflow=workflow, number=number, dag_hash=digest, definition=document, created_by=user
        )
        workflow.definition = document
        workflow.description = document.get("description", "")
        workflow.current_version = version
        workflow.source = source
        workflow.next_run_at = None  # the scheduler recomputes it from the new cron
        workflow.save()
    return workflow, created, True


def workflow_create(*, document: dict, source: str = "api", user=None) -> Workflow:
    """Create a new workflow; a name already taken is a conflict (update with PUT)."""
    definitions.validate_or_raise(document)
    if Workflow.objects.filter(name=document["name"]).exists():
        raise Conflict(f"workflow {document['name']!r} already exists", code="workflow_exists")
    workflow, _, _ = workflow_save(document=document, source=source, user=user)
    return workflow


def workflow_patch(*, name: str, changes: dict, source: str = "api", user=None):
    """Apply a JSON merge patch (RFC 7386: null removes a key) to the current definition."""
    workflow = Workflow.objects.filter(name=name).first()
    if workflow is None:
        raise NotFound(f"no workflow named {name!r}", code="workflow_not_found")
    if not isinstance(changes, dict):
        raise definitions.DefinitionError([{"path": "", "message": "a patch must be a mapping"}])
    document = merge_patch(workflow.definition, changes)
    return workflow_save(document=document, source=source, user=user, name=name)


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def workflow_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in WORKFLOW_FILE_SUFFIXES)


def workflow_sync(*, directory: Path) -> list[dict]:
    """Load every definition file in `directory`; returns one report per file."""
    reports = []
    for path in workflow_files(directory):
        try:
            document = definitions.parse_document(path.read_bytes(), path.name)
            workflow, created, changed = workflow_save(document=document, source=str(path))
        except definitions.DefinitionError as exc:
            reports.append({"file": str(path), "ok": False, "errors": exc.errors})
            continue
        state = "created" if created else ("updated" if changed else "unchanged")
        reports.append({"file": str(path), "ok": True, "workflow": workflow.name, "state": state})
    return reports
