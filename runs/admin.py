"""Admin for runs, step runs, approvals and events.

Everything here is read-only except through actions, and every action calls the same
service functions as the API and the CLI: cancel and resume runs, approve and reject
steps. A refused action (a conflict, a self-approval) becomes a message, never an error
page.
"""

import json
import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from runs import services
from runs.engine.errors import EngineError, Forbidden
from runs.models import Approval, LogChunk, Run, RunEvent, StepAttempt, StepOutput, StepRun
from runs.status import RUN_RESUMABLE, RUN_TERMINAL, RunStatus, StepStatus
from workflows.models import Workflow

RUN_ID_PREFIX = re.compile(r"^[0-9a-f]{1,32}\Z")
LOG_TAIL_CHARS = 20_000
STATUS_COLOURS = {
    RunStatus.SUCCEEDED: "#2e7d32",
    RunStatus.PARTIALLY_SUCCEEDED: "#9e9d24",
    RunStatus.FAILED: "#c62828",
    RunStatus.INVALID: "#c62828",
    RunStatus.CANCELLED: "#757575",
    RunStatus.RUNNING: "#1565c0",
    RunStatus.WAITING: "#ef6c00",
    StepStatus.WAITING_APPROVAL: "#ef6c00",
    StepStatus.SKIPPED: "#9e9e9e",
}


# --- shared pieces (the workflows admin uses them too) ---------------------------------


def format_duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def elapsed(row, now=None) -> str:
    """A finished row's duration; for one still going, the time since it started."""
    if row.duration_ms is not None:
        return format_duration(row.duration_ms)
    if row.started_at and not row.finished_at:
        ms = int(((now or timezone.now()) - row.started_at).total_seconds() * 1000)
        return f"{format_duration(max(ms, 0))} so far"
    return "—"


def status_badge(status: str):
    colour = STATUS_COLOURS.get(status, "inherit")
    return format_html('<strong style="color: {}">{}</strong>', colour, status)


def pretty_json(value):
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre style="margin: 0; white-space: pre-wrap">{}</pre>', text)


def admin_link(obj, text=None):
    if obj is None:
        return "—"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else obj)


def run_link(run_id: str):
    url = reverse("admin:runs_run_change", args=[run_id])
    return format_html('<a href="{}"><code>{}</code></a>', url, run_id)


def search_run_ids(queryset, term: str, run_field: str, name_fields: tuple[str, ...]):
    """One search box for big tables: a run id prefix (index range scan) or exact names."""
    term = term.strip()
    if not term:
        return queryset
    condition = Q()
    for field in name_fields:
        condition |= Q(**{field: term})
    if RUN_ID_PREFIX.match(term.lower()):
        condition |= Q(**{f"{run_field}__startswith": term.lower()})
    return queryset.filter(condition) if condition else queryset.none()


class NoWrites:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(NoWrites, admin.ModelAdmin):
    """Viewing only; actions still work (each has its own permission)."""


class ReadOnlyInline(NoWrites, admin.TabularInline):
    """Rows of a parent, shown to whoever may view the parent."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        opts = self.parent_model._meta
        return any(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("view", "change")
        )


class StatusColumns:
    """Status and duration, for runs and step runs alike."""

    @admin.display(description="status", ordering="status")
    def status_shown(self, row):
        return status_badge(row.status)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, row):
        return elapsed(row)


class WorkflowFilter(admin.SimpleListFilter):
    """Workflow names from one small query (the related-field filter would load every
    definition)."""

    title = "workflow"
    parameter_name = "workflow"
    field = "workflow_id"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Workflow.objects.values_list("pk", "name")]

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(**{self.field: int(value)})
        return queryset


class StepWorkflowFilter(WorkflowFilter):
    field = "run__workflow_id"


# --- runs --------------------------------------------------------------------------------


class StepRunInline(StatusColumns, ReadOnlyInline):
    model = StepRun
    fields = (
        "step_id",
        "kind",
        "status_shown",
        "attempt",
        "started_at",
        "finished_at",
        "duration",
        "reason",
        "error_shown",
    )
    readonly_fields = fields
    ordering = ("position",)
    show_change_link = True

    @admin.display(description="error")
    def error_shown(self, step):
        if not step.error:
            return ""
        first = step.error.strip().splitlines()[-1] if step.error.strip() else step.error
        return format_html('<span title="{}">{}</span>', step.error, first[:200])


@admin.register(Run)
class RunAdmin(StatusColumns, ReadOnlyAdmin):
    list_display = (
        "run_id",
        "workflow_name",
        "status_shown",
        "trigger",
        "created_at",
        "duration",
        "created_by",
    )
    list_display_links = ("run_id",)
    list_filter = ("status", WorkflowFilter, "trigger")
    list_select_related = ("workflow", "created_by")
    date_hierarchy = "created_at"
    search_fields = ("id",)  # see get_search_results
    search_help_text = "A run id (or its first characters) or a workflow name"
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("cancel_runs", "resume_runs")
    inlines = (StepRunInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "workflow_shown",
                    "version_shown",
                    "dag_hash",
                    "status_shown",
                    "reason",
                    "error",
                    "trigger",
                    "created_by",
                    "idempotency_key",
                    "events",
                )
            },
        ),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "start_at",
                    "logical_date",
                    "started_at",
                    "finished_at",
                    "duration",
                    "deadline_at",
                )
            },
        ),
        ("Input", {"fields": ("input_shown", "params_shown")}),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match and match.url_name == "runs_run_changelist":
            return queryset.defer("workflow__definition", "input", "params", "error")
        return queryset.select_related("workflow", "version").defer(
            "workflow__definition", "version__definition"
        )

    def get_search_results(self, request, queryset, search_term):
        return search_run_ids(queryset, search_term, "pk", ("workflow__name",)), False

    def has_cancel_permission(self, request):
        return request.user.has_perm("runs.cancel_run")

    @admin.display(description="run", ordering="id")
    def run_id(self, run):
        return format_html("<code>{}</code>", run.pk)

    @admin.display(description="workflow", ordering="workflow__name")
    def workflow_name(self, run):
        return run.workflow.name

    @admin.display(description="workflow")
    def workflow_shown(self, run):
        return admin_link(run.workflow)

    @admin.display(description="version")
    def version_shown(self, run):
        return admin_link(run.version, f"v{run.version.number}")

    @admin.display(description="events")
    def events(self, run):
        url = reverse("admin:runs_runevent_changelist")
        return format_html('<a href="{}?q={}">{} events</a>', url, run.pk, run.event_seq)

    @admin.display(description="input")
    def input_shown(self, run):
        return pretty_json(run.input)

    @admin.display(description="params")
    def params_shown(self, run):
        return pretty_json(run.params)

    # cancel and resume: as actions on the list and as buttons on a run's page

    def _each_run(self, request, run_ids, service, done: str) -> None:
        succeeded = []
        for run_id in run_ids:
            try:
                service(run_id=run_id)
            except EngineError as exc:
                self.message_user(request, f"{run_id}: {exc.message}", messages.WARNING)
            else:
                succeeded.append(run_id)
        if succeeded:
            self.message_user(request, f"{len(succeeded)} run(s) {done}", messages.SUCCESS)

    @admin.action(description="Cancel the selected runs", permissions=("cancel",))
    def cancel_runs(self, request, queryset):
        run_ids = list(queryset.values_list("pk", flat=True))
        self._each_run(request, run_ids, services.run_cancel, "cancelled")

    @admin.action(description="Resume the selected runs", permissions=("cancel",))
    def resume_runs(self, request, queryset):
        run_ids = list(queryset.values_list("pk", flat=True))
        self._each_run(request, run_ids, services.run_resume, "resumed")

    def get_urls(self):
        urls = [
            path(
                "<str:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="runs_run_cancel",
            ),
            path(
                "<str:object_id>/resume/",
                self.admin_site.admin_view(self.resume_view),
                name="runs_run_resume",
            ),
        ]
        return urls + super().get_urls()

    def _one_run(self, request, object_id, service, done):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        self._each_run(request, [object_id], service, done)
        return HttpResponseRedirect(reverse("admin:runs_run_change", args=[object_id]))

    def cancel_view(self, request, object_id):
        return self._one_run(request, object_id, services.run_cancel, "cancelled")

    def resume_view(self, request, object_id):
        return self._one_run(request, object_id, services.run_resume, "resumed")

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        allowed = obj is not None and self.has_cancel_permission(request)
        context["can_cancel"] = allowed and obj.status not in RUN_TERMINAL
        context["can_resume"] = allowed and obj.status in RUN_RESUMABLE
        if obj is not None:
            context["title"] = f"Run {obj.pk} of {obj.workflow.name}"
        return super().render_change_form(request, context, add, change, form_url, obj)


# --- step runs ---------------------------------------------------------------------------


class DecisionActionForm(ActionForm):
    comment = forms.CharField(
        required=False,
        label="Comment",
        widget=forms.TextInput(attrs={"placeholder": "comment (approve or reject)", "size": 30}),
    )


class StepAttemptInline(ReadOnlyInline):
    model = StepAttempt
    fields = ("number", "status", "started_at", "finished_at", "exit_code", "reason", "worker")
    readonly_fields = fields
    verbose_name_plural = "attempts"


class ApprovalInline(ReadOnlyInline):
    model = Approval
    fields = ("attempt", "user", "decision", "comment", "created_at")
    readonly_fields = fields
    verbose_name_plural = "decisions"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


class StepOutputInline(ReadOnlyInline):
    model = StepOutput
    fields = ("key", "value_shown")
    readonly_fields = fields
    verbose_name_plural = "outputs"

    @admin.display(description="value")
    def value_shown(self, output):
        return pretty_json(output.value)


@admin.register(StepRun)
class StepRunAdmin(StatusColumns, ReadOnlyAdmin):
    list_display = (
        "step_id",
        "run_shown",
        "workflow_name",
        "kind",
        "status_shown",
        "attempt",
        "waiting_since",
        "started_at",
        "duration",
    )
    list_filter = ("status", "kind", StepWorkflowFilter)
    list_select_related = ("run__workflow",)
    search_fields = ("step_id",)  # see get_search_results
    search_help_text = "A run id (or its first characters), a step id or a workflow name"
    ordering = ("-run_id", "position")
    list_per_page = 50
    show_full_result_count = False
    actions = ("approve_steps", "reject_steps")
    action_form = DecisionActionForm
    inlines = (StepAttemptInline, ApprovalInline, StepOutputInline)
    fields = (
        "run_shown",
        "step_id",
        "kind",
        "status_shown",
        "attempt",
        "max_attempts",
        "continue_on_failure",
        "waiting_since",
        "enqueued_at",
        "not_before",
        "started_at",
        "finished_at",
        "duration",
        "worker",
        "exit_code",
        "reason",
        "error",
        "row_count",
        "log_tail",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .defer("run__workflow__definition", "run__input", "run__params", "run__error")
        )

    def get_search_results(self, request, queryset, search_term):
        names = ("step_id", "run__workflow__name")
        return search_run_ids(queryset, search_term, "run__id", names), False

    def has_approve_permission(self, request):
        return request.user.has_perm("runs.approve_steprun")

    @admin.display(description="run", ordering="run_id")
    def run_shown(self, step):
        return run_link(step.run_id)

    @admin.display(description="workflow", ordering="run__workflow__name")
    def workflow_name(self, step):
        return step.run.workflow.name

    @admin.display(description="log (latest attempt, tail)")
    def log_tail(self, step):
        chunks = LogChunk.objects.filter(step_run=step, attempt=step.attempt).order_by(
            "-created_at", "-pk"
        )
        texts, size = [], 0
        for text in chunks.values_list("text", flat=True).iterator():
            texts.append(text)
            size += len(text)
            if size >= LOG_TAIL_CHARS:
                break
        if not texts:
            return "—"
        tail = "".join(reversed(texts))[-LOG_TAIL_CHARS:]
        return format_html(
            '<pre style="margin: 0; max-height: 30em; overflow: auto; white-space: pre-wrap">'
            "{}</pre>",
            tail,
        )

    def _decide(self, request, queryset, service, verb: str) -> None:
        if not self.has_approve_permission(request):
            raise PermissionDenied
        comment = request.POST.get("comment", "").strip()
        decided, still_waiting = 0, []
        for run_id, step_id in queryset.values_list("run_id", "step_id"):
            try:
                step = service(run_id=run_id, step_id=step_id, user=request.user, comment=comment)
            except EngineError as exc:
                level = messages.ERROR if isinstance(exc, Forbidden) else messages.WARNING
                self.message_user(request, f"{run_id}/{step_id}: {exc.message}", level)
                continue
            decided += 1
            if step.status == StepStatus.WAITING_APPROVAL:
                still_waiting.append(f"{run_id}/{step_id}")
        if decided:
            self.message_user(request, f"{decided} step(s) {verb}", messages.SUCCESS)
        if still_waiting:
            self.message_user(
                request,
                "still waiting for more approvals: " + ", ".join(still_waiting),
                messages.INFO,
            )

    @admin.action(description="Approve the selected steps", permissions=("approve",))
    def approve_steps(self, request, queryset):
        self._decide(request, queryset, services.step_approve, "approved")

    @admin.action(description="Reject the selected steps", permissions=("approve",))
    def reject_steps(self, request, queryset):
        self._decide(request, queryset, services.step_reject, "rejected")


# --- approvals and events ----------------------------------------------------------------


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = (
        "step_shown",
        "run_shown",
        "attempt",
        "user",
        "decision",
        "comment",
        "created_at",
    )
    list_filter = ("decision",)
    list_select_related = ("step_run", "user")
    search_fields = ("user__username",)  # see get_search_results
    search_help_text = "A run id (or its first characters) or a user name"
    ordering = ("-created_at",)
    fields = ("step_shown", "run_shown", "attempt", "user", "decision", "comment", "created_at")
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        names = ("user__username",)
        return search_run_ids(queryset, search_term, "step_run__run__id", names), False

    @admin.display(description="step", ordering="step_run__step_id")
    def step_shown(self, approval):
        return admin_link(approval.step_run, approval.step_run.step_id)

    @admin.display(description="run", ordering="step_run__run_id")
    def run_shown(self, approval):
        return run_link(approval.step_run.run_id)


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyAdmin):
    list_display = ("run_shown", "seq", "type", "step_id", "status", "data_shown", "created_at")
    list_filter = ("type",)
    search_fields = ("step_id",)  # see get_search_results
    search_help_text = "A run id (or its first characters)"
    ordering = ("-created_at", "-pk")
    list_per_page = 100
    show_full_result_count = False
    fields = ("run_shown", "seq", "type", "step_id", "status", "data_pretty", "created_at")
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        return search_run_ids(queryset, search_term, "run__id", ()), False

    @admin.display(description="run", ordering="run_id")
    def run_shown(self, event):
        return run_link(event.run_id)

    @admin.display(description="data")
    def data_shown(self, event):
        text = json.dumps(event.data, sort_keys=True, default=str) if event.data else ""
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.display(description="data")
    def data_pretty(self, event):
        return pretty_json(event.data)
