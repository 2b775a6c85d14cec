"""Workflows: list, create, read, replace, patch, delete, validate, dry-run, and their runs."""

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ParseError

from api import serializers as s
from api.filters import WorkflowFilter
from api.parsers import PARSERS
from api.views_base import ApiListView, ApiView, body, respond
from api.views_runs import START_RESPONSES, RunRowsList, start_run
from runs import maintenance, selectors, services
from workflows import definitions
from workflows.services import workflow_create, workflow_patch, workflow_save

DEFINITION_BODY = {
    "application/json": s.WorkflowDefinitionSerializer,
    "application/yaml": s.WorkflowDefinitionSerializer,
}


def definition_document(request) -> dict:
    """The request body is the definition document itself (JSON or YAML)."""
    document = request.data
    if not isinstance(document, dict):
        raise definitions.DefinitionError(
            [{"path": "", "message": "a workflow document must be a mapping"}]
        )
    return document


def detail(name: str, status: int = 200):
    return respond(s.WorkflowDetailSerializer, selectors.workflow_for_api(name), status)


class WorkflowListView(ApiListView):
    parser_classes = PARSERS  # the definition document, as JSON or YAML
    serializer_class = s.WorkflowSerializer
    filterset_class = WorkflowFilter
    write_scope = "admin"
    error_codes = {"POST": [409]}

    def get_queryset(self):
        return selectors.workflow_queryset()

    @extend_schema(request=DEFINITION_BODY, responses={201: s.WorkflowDetailSerializer})
    def post(self, request):
        """Create a workflow; 400 lists every validation error, 409 if the name is taken."""
        workflow = workflow_create(document=definition_document(request), user=request.user)
        return detail(workflow.name, 201)


class WorkflowDetailView(ApiView):
    parser_classes = PARSERS
    write_scope = "admin"
    error_codes = {"DELETE": [409]}

    @extend_schema(responses=s.WorkflowDetailSerializer)
    def get(self, request, name):
        return detail(name)

    @extend_schema(
        request=DEFINITION_BODY,
        responses={200: s.WorkflowDetailSerializer, 201: s.WorkflowDetailSerializer},
    )
    def put(self, request, name):
        """Replace the definition (a new version if it changed); creates the workflow if new."""
        document = definition_document(request)
        _, created, _ = workflow_save(document=document, name=name, user=request.user)
        return detail(name, 201 if created else 200)

    @extend_schema(request=DEFINITION_BODY, responses=s.WorkflowDetailSerializer)
    def patch(self, request, name):
        """A JSON merge patch of the definition: given keys replace, null removes."""
        workflow_patch(name=name, changes=definition_document(request), user=request.user)
        return detail(name)

    @extend_schema(responses={200: s.WorkflowDeletedSerializer})
    def delete(self, request, name):
        """Delete the workflow with its versions and runs; 409 while a run is unfinished."""
        return respond(s.WorkflowDeletedSerializer, maintenance.workflow_delete(name=name))


def validation_of(document) -> dict:
    result = definitions.validate(document)
    return {"valid": result.valid, "errors": result.errors, "warnings": result.warnings}


def parsed_or_error(request):
    """The body, or a validation answer naming why it could not be parsed."""
    try:
        return request.data, None
    except ParseError as exc:
        return None, {"valid": False, "errors": [{"path": "", "message": str(exc.detail)}]}


class WorkflowValidateView(ApiView):
    """Validate a definition document without saving it."""

    parser_classes = PARSERS
    required_scope = "read"
    parse_eagerly = False  # a body that cannot be parsed is answered as invalid

    @extend_schema(
        request=DEFINITION_BODY, responses=s.ValidationSerializer, operation_id="workflows_validate"
    )
    def post(self, request):
        document, failed = parsed_or_error(request)
        answer = failed or validation_of(document)
        return respond(s.ValidationSerializer, {"warnings": [], **answer})


class WorkflowNamedValidateView(ApiView):
    """Validate a new definition for this workflow (or, with no body, the current one)."""

    parser_classes = PARSERS
    required_scope = "read"
    parse_eagerly = False  # a body that cannot be parsed is answered as invalid

    @extend_schema(
        request=DEFINITION_BODY, responses=s.ValidationSerializer, operation_id="workflow_validate"
    )
    def post(self, request, name):
        workflow = services.workflow_get(name)
        document, failed = parsed_or_error(request)
        if failed:
            return respond(s.ValidationSerializer, {"warnings": [], **failed})
        document = document or workflow.definition
        answer = validation_of(document)
        if isinstance(document, dict) and document.get("name") != name:
            message = f"name {document.get('name')!r} does not match {name!r}"
            answer["errors"].append({"path": "name", "message": message})
            answer["valid"] = False
        return respond(s.ValidationSerializer, answer)


class WorkflowRunsView(RunRowsList, ApiListView):
    """That workflow's runs, with the filters of GET /runs; POST starts one."""

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator
            return selectors.run_queryset().none()
        workflow = services.workflow_get(self.kwargs["name"])
        return selectors.run_queryset().filter(workflow=workflow)

    @extend_schema(
        request=s.WorkflowRunStartSerializer,
        parameters=[s.WaitQuerySerializer],
        responses=START_RESPONSES,
    )
    def post(self, request, name):
        data = body(request, s.WorkflowRunStartSerializer)
        return start_run(request, name, data)


class WorkflowLatestRunView(ApiView):
    @extend_schema(responses=s.RunDetailSerializer)
    def get(self, request, name):
        run = selectors.latest_run(services.workflow_get(name))
        return respond(s.RunDetailSerializer, run)


class WorkflowDryRunView(ApiView):
    """Validate the input and show the plan: layers and rendered step arguments. Nothing
    runs and nothing is stored."""

    @extend_schema(request=s.DryRunSerializer, responses=s.DryRunPlanSerializer)
    def post(self, request, name):
        data = body(request, s.DryRunSerializer)
        workflow = services.workflow_get(name)
        plan = selectors.dry_run(workflow, input=data["input"], params=data.get("params"))
        return respond(s.DryRunPlanSerializer, plan)
