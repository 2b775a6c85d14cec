"""Admin for workflows: a definition editor that validates before anything is stored,
read-only versions, start-run, pause and unpause actions, and a schedules page.

Definitions are saved through `workflow_save`, so an edit made here creates a new
version exactly as one made through the API or `trellis workflow sync` does.
"""

import json

import yaml
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from runs.admin import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    WorkflowFilter,
    admin_link,
    pretty_json,
    status_badge,
)
from runs.engine.errors import EngineError, InvalidInput
from runs.models import Run
from runs.scheduler import next_tick, schedule_of
from runs.services import run_start
from runs.status import Trigger
from workflows import definitions
from workflows.models import Workflow, WorkflowVersion
from workflows.services import WORKFLOW_FILE_SUFFIXES, workflow_save

UPCOMING_TICKS = 3
NEW_DEFINITION = """\
name: my-workflow
description: What this workflow does
steps:
  - id: hello
    kind: shell
    command: ["echo", "hello"]
"""


# Stored definitions may come back with their keys reordered (PostgreSQL jsonb does), so
# the editor lays them out in a readable order: identity first, steps last.
TOP_LEVEL_ORDER = ("name", "description", "tags", "input_schema", "params", "schedule")
STEP_ORDER = ("id", "kind", "description", "depends_on")


def _ordered(mapping: dict, first: tuple[str, ...], last: tuple[str, ...] = ()) -> dict:
    keys = [k for k in first if k in mapping]
    keys += [k for k in mapping if k not in first and k not in last]
    keys += [k for k in last if k in mapping]
    return {key: mapping[key] for key in keys}


def dump_document(document: dict) -> str:
    document = _ordered(document, TOP_LEVEL_ORDER, last=("steps",))
    if isinstance(document.get("steps"), list):
        document["steps"] = [
            _ordered(step, STEP_ORDER) if isinstance(step, dict) else step
            for step in document["steps"]
        ]
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def definition_block(document: dict):
    return format_html(
        '<pre style="margin: 0; white-space: pre-wrap">{}</pre>', dump_document(document)
    )


def error_lines(errors: list[dict]) -> list[str]:
    return [f"{e['path']}: {e['message']}" if e["path"] else e["message"] for e in errors]


def next_run(workflow: Workflow, now=None):
    """When the scheduler will start the next run, or None (no schedule, or paused)."""
    schedule = schedule_of(workflow)
    if schedule is None or workflow.is_paused:
        return None
    return workflow.next_run_at or next_tick(schedule, now or timezone.now())


def set_paused(queryset, paused: bool) -> int:
    # Unpausing starts the schedule from now: ticks missed while paused are not caught up.
    changes = {"is_paused": paused} if paused else {"is_paused": False, "next_run_at": None}
    return queryset.filter(is_paused=not paused).update(**changes)


# --- the definition editor ---------------------------------------------------------------


class WorkflowForm(forms.ModelForm):
    document = forms.CharField(
        label="Definition",
        strip=False,
        widget=forms.Textarea(
            attrs={
                "rows": 30,
                "cols": 100,
                "spellcheck": "false",
                "style": "font-family: monospace; width: 100%; box-sizing: border-box",
            }
        ),
        help_text="YAML or JSON. Nothing is stored unless the whole document is valid; "
        "each change creates a new version.",
    )
    base_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Workflow
        fields = ["is_paused"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parsed: dict | None = None
        self.warnings: list[dict] = []
        workflow = self.instance
        if workflow.pk:
            self.initial.setdefault("document", dump_document(workflow.definition))
            current = workflow.current_version
            self.initial.setdefault("base_version", current.number if current else 0)
            if workflow.source.endswith(WORKFLOW_FILE_SUFFIXES):
                self.fields["document"].help_text += (
                    f" Loaded from {workflow.source}: the next `trellis workflow sync` "
                    "replaces edits made here with that file."
                )
        else:
            self.initial.setdefault("document", NEW_DEFINITION)

    def clean_document(self):
        text = self.cleaned_data["document"]
        try:
            document = definitions.parse_document(text)
        except definitions.DefinitionError as exc:
            raise forms.ValidationError(error_lines(exc.errors), code="invalid") from None
        result = definitions.validate(document)
        errors = list(result.errors)
        name = document.get("name")
        if self.instance.pk:
            if isinstance(name, str) and name != self.instance.name:
                errors.append(
                    {
                        "path": "name",
                        "message": f"the name cannot change (it is {self.instance.name!r}); "
                        "add a new workflow to use another name",
                    }
                )
        elif isinstance(name, str) and Workflow.objects.filter(name=name).exists():
            errors.append({"path": "name", "message": f"a workflow named {name!r} already exists"})
        if errors:
            raise forms.ValidationError(error_lines(errors), code="invalid")
        self.parsed = document
        self.warnings = result.warnings
        return text

    def clean(self):
        cleaned = super().clean()
        workflow = self.instance
        base = cleaned.get("base_version")
        if workflow.pk and base is not None:
            current = (
                WorkflowVersion.objects.filter(workflow=workflow)
                .order_by("-number")
                .values_list("number", flat=True)
                .first()
            ) or 0
            if current != base:
                raise forms.ValidationError(
                    f"The definition changed (now version {current}) after you opened it "
                    f"(version {base}). Reload the page and apply your change again.",
                    code="stale",
                )
        return cleaned


class VersionInline(ReadOnlyInline):
    model = WorkflowVersion
    fields = ("number", "dag_hash", "created_at", "created_by")
    readonly_fields = fields
    ordering = ("-number",)
    show_change_link = True
    verbose_name_plural = "versions"

    def get_queryset(self, request):
        return super().get_queryset(request).defer("definition").select_related("created_by")


class HasScheduleFilter(admin.SimpleListFilter):
    title = "schedule"
    parameter_name = "scheduled"

    def lookups(self, request, model_admin):
        return [("yes", "Has a schedule"), ("no", "No schedule")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(definition__has_key="schedule")
        if self.value() == "no":
            return queryset.exclude(definition__has_key="schedule")
        return queryset


class StartRunForm(forms.Form):
    input = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "style": "font-family: monospace"}),
        initial="{}",
        help_text="A JSON object; it must match the workflow's input schema.",
    )

    def clean_input(self):
        try:
            value = definitions.strict_json(self.cleaned_data["input"])
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("the input must be a JSON object")
        return value


# --- workflows ---------------------------------------------------------------------------


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = (
        "name",
        "step_count",
        "version",
        "schedule_cron",
        "next_run_shown",
        "is_paused",
        "last_run",
    )
    list_filter = ("is_paused", HasScheduleFilter)
    search_fields = ("name", "description")
    inlines = (VersionInline,)
    actions = ("start_runs", "pause", "unpause")
    readonly_fields = (
        "name",
        "description",
        "version",
        "source",
        "schedule_shown",
        "next_run_shown",
        "last_scheduled_at",
        "created_at",
        "updated_at",
        "text",
    )

    def get_queryset(self, request):
        last = Run.objects.filter(workflow=OuterRef("pk")).order_by("-created_at", "-id")
        return (
            super()
            .get_queryset(request)
            .select_related("current_version")
            .defer("current_version__definition")
            .annotate(
                last_run_id=Subquery(last.values("pk")[:1]),
                last_run_status=Subquery(last.values("status")[:1]),
            )
        )

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("document", "is_paused")}),)
        editable = self.has_change_permission(request, obj)
        return (
            (None, {"fields": ("name", "description", "version", "source", "is_paused")}),
            ("Schedule", {"fields": ("schedule_shown", "next_run_shown", "last_scheduled_at")}),
            ("Definition", {"fields": ("base_version", "document") if editable else ("text",)}),
            (None, {"fields": ("created_at", "updated_at")}),
        )

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def save_model(self, request, obj, form, change):
        workflow, _, changed = workflow_save(
            document=form.parsed,
            source="admin",
            user=request.user,
            name=obj.name if change else None,
        )
        paused = form.cleaned_data.get("is_paused", False)
        if paused != workflow.is_paused:
            set_paused(Workflow.objects.filter(pk=workflow.pk), paused)
        obj.pk = workflow.pk
        obj.refresh_from_db()
        obj._state.adding = False
        number = obj.current_version.number
        if changed:
            self.message_user(request, f"Saved {obj.name} as version {number}.", messages.INFO)
        else:
            self.message_user(
                request, f"The definition did not change: still version {number}.", messages.INFO
            )
        for warning in error_lines(form.warnings):
            self.message_user(request, warning, messages.WARNING)

    # columns

    @admin.display(description="steps")
    def step_count(self, workflow):
        return len(workflow.steps)

    @admin.display(description="version", ordering="current_version__number")
    def version(self, workflow):
        current = workflow.current_version
        return admin_link(current, f"v{current.number}") if current else "—"

    @admin.display(description="schedule")
    def schedule_cron(self, workflow):
        schedule = schedule_of(workflow)
        return schedule["cron"] if schedule else "—"

    @admin.display(description="next run", ordering="next_run_at")
    def next_run_shown(self, workflow):
        when = next_run(workflow)
        if when is None:
            return "paused" if workflow.is_paused and schedule_of(workflow) else "—"
        return when

    @admin.display(description="last run", ordering="last_run_status")
    def last_run(self, workflow):
        run_id = getattr(workflow, "last_run_id", None)
        if not run_id:
            return "—"
        url = reverse("admin:runs_run_change", args=[run_id])
        return format_html('<a href="{}">{}</a>', url, status_badge(workflow.last_run_status))

    @admin.display(description="definition")
    def text(self, workflow):
        return definition_block(workflow.definition)

    @admin.display(description="schedule")
    def schedule_shown(self, workflow):
        schedule = schedule_of(workflow)
        return pretty_json(schedule) if schedule else "—"

    # actions

    def has_start_permission(self, request, obj=None):
        return request.user.has_perm("runs.add_run")

    @admin.action(description="Start a run (empty input)", permissions=("start",))
    def start_runs(self, request, queryset):
        for workflow in queryset:
            try:
                run, _ = run_start(
                    workflow=workflow, input={}, trigger=Trigger.ADMIN, user=request.user
                )
            except EngineError as exc:
                self.message_user(request, f"{workflow.name}: {exc.message}", messages.ERROR)
                continue
            url = reverse("admin:runs_run_change", args=[run.pk])
            self.message_user(
                request,
                format_html('{}: started run <a href="{}">{}</a>', workflow.name, url, run.pk),
                messages.SUCCESS,
            )

    @admin.action(description="Pause the selected workflows' schedules", permissions=("change",))
    def pause(self, request, queryset):
        count = set_paused(queryset, True)
        self.message_user(request, f"{count} workflow(s) paused", messages.SUCCESS)

    @admin.action(description="Unpause the selected workflows' schedules", permissions=("change",))
    def unpause(self, request, queryset):
        count = set_paused(queryset, False)
        self.message_user(request, f"{count} workflow(s) unpaused", messages.SUCCESS)

    # extra pages: start a run with an input, the schedules

    def get_urls(self):
        urls = [
            path(
                "schedules/",
                self.admin_site.admin_view(self.schedules_view),
                name="workflows_workflow_schedules",
            ),
            path(
                "<path:object_id>/start/",
                self.admin_site.admin_view(self.start_view),
                name="workflows_workflow_start",
            ),
        ]
        return urls + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_start": self.has_start_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def start_view(self, request, object_id):
        workflow = get_object_or_404(
            Workflow.objects.select_related("current_version"), pk=object_id
        )
        if not (self.has_view_permission(request, workflow) and self.has_start_permission(request)):
            raise PermissionDenied
        form = StartRunForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                run, _ = run_start(
                    workflow=workflow,
                    input=form.cleaned_data["input"],
                    trigger=Trigger.ADMIN,
                    user=request.user,
                )
            except InvalidInput as exc:
                errors = exc.details.get("errors")
                form.add_error("input", error_lines(errors) if errors else exc.message)
            except EngineError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, f"Started run {run.pk}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))
        schema = workflow.definition.get("input_schema")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": workflow,
            "title": f"Start a run of {workflow.name}",
            "form": form,
            "input_schema": json.dumps(schema, indent=2) if schema else None,
        }
        return TemplateResponse(request, "admin/workflows/workflow/start_run.html", context)

    def schedules_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        now = timezone.now()
        rows = []
        workflows = Workflow.objects.filter(definition__has_key="schedule").order_by("name")
        for workflow in workflows:
            schedule = schedule_of(workflow)
            upcoming = []
            if schedule and not workflow.is_paused:
                when = next_run(workflow, now)
                while len(upcoming) < UPCOMING_TICKS:
                    upcoming.append(when)
                    when = next_tick(schedule, when)
            rows.append(
                {
                    "workflow": workflow,
                    "schedule": schedule,
                    "catchup": (schedule or {}).get("catchup", "latest"),
                    "timezone": (schedule or {}).get("timezone", "UTC"),
                    "upcoming": upcoming,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Schedules",
            "rows": rows,
            "now": now,
        }
        return TemplateResponse(request, "admin/workflows/workflow/schedules.html", context)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "workflow", "number", "dag_hash", "created_at", "created_by")
    list_filter = (WorkflowFilter,)
    list_select_related = ("workflow", "created_by")
    search_fields = ("workflow__name", "=dag_hash")
    fields = ("workflow", "number", "dag_hash", "created_at", "created_by", "definition_shown")
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request).defer("workflow__definition")
        match = request.resolver_match
        if match and match.url_name == "workflows_workflowversion_changelist":
            queryset = queryset.defer("definition")
        return queryset

    @admin.display(description="definition")
    def definition_shown(self, version):
        return definition_block(version.definition)
