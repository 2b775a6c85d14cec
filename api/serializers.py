"""Request and response shapes of /api/v1. Responses are rendered through these serializers,
so the OpenAPI document describes exactly what is sent."""

from datetime import UTC

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs import selectors
from runs.maintenance import MAX_BULK_ACTION
from runs.scheduler import schedule_of
from runs.services import MAX_BULK
from runs.status import RunStatus, StepStatus, Trigger
from workflows.definitions import OVERLAP, unstorable

MAX_WAIT_SECONDS = 60
MAX_LOG_PAGE_BYTES = 16 * 1024 * 1024
MAX_SEQ = 2**31 - 1  # attempt numbers and event seqs are stored as 32-bit integers
MAX_BYTES = 2**63 - 1


class StorableDictField(serializers.DictField):
    """A free-form object that must be storable as it is (no NUL characters, …)."""

    def __init__(self, *, name: str, **kwargs):
        self.error_path = name
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        problem = unstorable(value, self.error_path)
        if problem:
            raise serializers.ValidationError(f"{problem[0]} {problem[1]}")
        return value


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    code = serializers.CharField()
    details = serializers.DictField()


class PathMessageSerializer(serializers.Serializer):
    path = serializers.CharField(allow_blank=True)
    message = serializers.CharField()


# --- system ------------------------------------------------------------------------------


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    version = serializers.CharField()
    uptime_seconds = serializers.IntegerField()
    database = serializers.CharField()
    broker = serializers.CharField()
    workers = serializers.IntegerField()


class SystemInfoSerializer(serializers.Serializer):
    version = serializers.CharField()
    database = serializers.CharField(help_text="sqlite or postgresql")
    db_size_bytes = serializers.IntegerField(allow_null=True)
    db_size = serializers.CharField(allow_null=True)
    workflows = serializers.IntegerField()
    active_runs = serializers.IntegerField()
    queued_runs = serializers.IntegerField()
    max_concurrent_runs = serializers.IntegerField()
    workers_alive = serializers.IntegerField()


class PurgeSerializer(serializers.Serializer):
    older_than = serializers.CharField(
        required=False, max_length=32, help_text="a duration: 90m, 12h, 30d, 2w"
    )
    days = serializers.IntegerField(required=False, min_value=0, max_value=36500)

    def validate(self, attrs):
        if ("older_than" in attrs) == ("days" in attrs):
            raise serializers.ValidationError("give either older_than or days")
        return attrs


class PurgeResultSerializer(serializers.Serializer):
    removed = serializers.IntegerField()
    freed_bytes = serializers.IntegerField()
    freed = serializers.CharField()


# --- runs --------------------------------------------------------------------------------


class RunSerializer(serializers.Serializer):
    run_id = serializers.CharField(source="pk")
    workflow = serializers.CharField(source="workflow.name")
    status = serializers.ChoiceField(choices=RunStatus.choices)
    trigger = serializers.ChoiceField(choices=Trigger.choices)
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    created_at = serializers.DateTimeField()
    start_at = serializers.DateTimeField(allow_null=True)
    logical_date = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    dag_hash = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


# What run lists read: the columns behind RunSerializer's fields, in its order.
RUN_ROW_COLUMNS = (
    "pk",
    "workflow__name",
    "status",
    "trigger",
    "created_by__username",
    "created_at",
    "start_at",
    "logical_date",
    "started_at",
    "finished_at",
    "duration_ms",
    "dag_hash",
    "reason",
    "error",
)


def run_rows(rows) -> list[dict]:
    """RunSerializer(many=True).data for `.values(*RUN_ROW_COLUMNS)` rows, built directly:
    the same JSON (same keys, order and formats) for a fraction of the serializer's cost.
    tests/api/test_fast_paths.py compares the two."""
    zone = timezone.get_current_timezone()
    in_utc = timezone.get_current_timezone_name() == "UTC"

    def when(value):  # DateTimeField.to_representation: current zone, ISO 8601, Z for UTC
        if not value:
            return None
        if value.tzinfo is UTC and in_utc:  # as the database hands them out
            return value  # the renderers write it as to_representation would ("…Z")
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    def text(value):
        return None if value is None else str(value)

    def number(value):
        return None if value is None else int(value)

    return [
        {
            "run_id": text(row["pk"]),
            "workflow": text(row["workflow__name"]),
            "status": row["status"],
            "trigger": row["trigger"],
            "created_by": text(row["created_by__username"]),
            "created_at": when(row["created_at"]),
            "start_at": when(row["start_at"]),
            "logical_date": when(row["logical_date"]),
            "started_at": when(row["started_at"]),
            "finished_at": when(row["finished_at"]),
            "duration_ms": number(row["duration_ms"]),
            "dag_hash": text(row["dag_hash"]),
            "reason": text(row["reason"]),
            "error": text(row["error"]),
        }
        for row in rows
    ]


class StepRowSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=StepStatus.choices)
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    row_count = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


class RunDetailSerializer(RunSerializer):
    version = serializers.IntegerField(source="version.number")
    input = serializers.JSONField()
    params = serializers.DictField()
    last_seq = serializers.IntegerField(source="event_seq", help_text="the last event's seq")
    cancel_requested_at = serializers.DateTimeField(
        allow_null=True,
        help_text="a cancel with wait_for_running: the run ends cancelled when its running "
        "steps end",
    )
    steps = serializers.SerializerMethodField()

    @extend_schema_field(StepRowSerializer(many=True))
    def get_steps(self, run):
        return StepRowSerializer(selectors.step_rows(run), many=True).data


class WorkflowRunStartSerializer(serializers.Serializer):
    input = serializers.DictField(required=False, default=dict)
    params = StorableDictField(name="params", required=False)
    start_at = serializers.DateTimeField(required=False, allow_null=True)
    idempotency_key = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=200
    )


class RunStartSerializer(WorkflowRunStartSerializer):
    workflow = serializers.CharField(max_length=100)


class WaitQuerySerializer(serializers.Serializer):
    wait = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_WAIT_SECONDS,
        help_text="hold up to this many seconds for the run to finish",
    )


class RunStartedSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    status = serializers.ChoiceField(choices=RunStatus.choices)


class BulkStartSerializer(serializers.Serializer):
    workflow = serializers.CharField(max_length=100)
    inputs = serializers.ListField(
        child=serializers.DictField(), allow_empty=False, max_length=MAX_BULK
    )


class BulkStartedSerializer(serializers.Serializer):
    run_ids = serializers.ListField(child=serializers.CharField())


class CancelSerializer(serializers.Serializer):
    grace_seconds = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=3600
    )
    wait_for_running = serializers.BooleanField(required=False, default=False)


class RerunSerializer(serializers.Serializer):
    from_step = serializers.CharField(max_length=100)
    dry_run = serializers.BooleanField(required=False, default=False)


class RerunPlanSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    dry_run = serializers.BooleanField()
    steps = serializers.ListField(child=serializers.CharField(), help_text="steps that would run")


class BulkActionSerializer(serializers.Serializer):
    run_ids = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=MAX_BULK_ACTION
    )
    filter = serializers.DictField(
        required=False, help_text="the filters of GET /runs: status, workflow, trigger, …"
    )

    def validate(self, attrs):
        if ("run_ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError("give either run_ids or filter")
        if "filter" in attrs and not attrs["filter"]:
            raise serializers.ValidationError("filter needs at least one condition")
        return attrs


class BulkCancelSerializer(BulkActionSerializer, CancelSerializer):
    pass


class BulkResultSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    ok = serializers.BooleanField()
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    error = serializers.CharField(required=False)
    code = serializers.CharField(required=False)


class CalendarQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(required=False, default=90, min_value=1, max_value=365)


class CalendarDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    total = serializers.IntegerField()


# --- steps, logs, outputs, events --------------------------------------------------------


class AttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=StepStatus.choices)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    exit_code = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)
    worker = serializers.CharField(allow_blank=True)


class DecisionSerializer(serializers.Serializer):
    attempt = serializers.IntegerField(help_text="the step's attempt the decision was made in")
    user = serializers.CharField()
    decision = serializers.ChoiceField(choices=["approved", "rejected"])
    comment = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class StepDetailSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=StepStatus.choices)
    depends_on = serializers.ListField(child=serializers.CharField())
    attempt = serializers.IntegerField(help_text="the current or last attempt number")
    max_attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    waiting_since = serializers.DateTimeField(allow_null=True)
    exit_code = serializers.IntegerField(allow_null=True)
    row_count = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)
    continue_on_failure = serializers.BooleanField()
    approvals_required = serializers.IntegerField(allow_null=True)
    attempts = AttemptSerializer(many=True)
    approvals = DecisionSerializer(many=True)


class LogQuerySerializer(serializers.Serializer):
    attempt = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_SEQ, help_text="default: latest"
    )
    stream = serializers.ChoiceField(choices=["stdout", "stderr"], required=False)
    offset = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_BYTES, help_text="byte position"
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_LOG_PAGE_BYTES,
        default=selectors.LOG_PAGE_BYTES,
        help_text="bytes per stream",
    )
    tail = serializers.IntegerField(
        required=False, min_value=0, max_value=100_000, help_text="the last N lines"
    )

    def validate(self, attrs):
        if "tail" in attrs and "offset" in attrs:
            raise serializers.ValidationError("give either tail or offset")
        return attrs


class StepLogSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    attempt = serializers.IntegerField()
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)
    offset = serializers.IntegerField(allow_null=True)
    next_offset = serializers.IntegerField(help_text="pass as offset to read on")
    more = serializers.BooleanField(help_text="bytes after next_offset are already there")


class DecideSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)


class DecisionResultSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["approved", "rejected"])
    step_status = serializers.ChoiceField(choices=StepStatus.choices)


class OutputSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    key = serializers.CharField()
    value = serializers.JSONField(allow_null=True)


class OutputQuerySerializer(serializers.Serializer):
    step_id = serializers.CharField(required=False, max_length=100)


class RecordsQuerySerializer(serializers.Serializer):
    key = serializers.CharField(required=False, max_length=200, help_text="default: first list")


class PreviewSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    key = serializers.CharField()
    total = serializers.IntegerField()
    columns = serializers.ListField(child=serializers.CharField())
    records = serializers.ListField(child=serializers.JSONField(allow_null=True))


class ColumnProfileSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text="integer, number, string, boolean, object, …")
    count = serializers.IntegerField()
    nulls = serializers.IntegerField()
    distinct = serializers.IntegerField()
    min = serializers.JSONField(allow_null=True)
    max = serializers.JSONField(allow_null=True)


class ProfileSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    key = serializers.CharField()
    rows = serializers.IntegerField()
    columns = ColumnProfileSerializer(many=True)


class LogLineSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    step_id = serializers.CharField()
    attempt = serializers.IntegerField()
    stream = serializers.ChoiceField(choices=["stdout", "stderr"])
    level = serializers.ChoiceField(choices=["info", "error"])
    message = serializers.CharField(allow_blank=True)
    timestamp = serializers.DateTimeField()


class LogLinesQuerySerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=["info", "error"], required=False)
    step_id = serializers.CharField(required=False, max_length=100)
    attempt = serializers.IntegerField(required=False, min_value=1, max_value=MAX_SEQ)
    limit = serializers.IntegerField(required=False, default=10_000, min_value=1, max_value=100_000)


class LogExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["text", "jsonl"], required=False, default="text")
    level = serializers.ChoiceField(choices=["info", "error"], required=False)
    step_id = serializers.CharField(required=False, max_length=100)


class EventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    type = serializers.CharField()
    run_id = serializers.CharField()
    step_id = serializers.CharField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField()
    data = serializers.DictField()


class EventQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(required=False, default=0, min_value=0, max_value=MAX_SEQ)
    limit = serializers.IntegerField(required=False, default=1000, min_value=1, max_value=10_000)


class ApprovalSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    workflow = serializers.CharField()
    step_id = serializers.CharField()
    waiting_since = serializers.DateTimeField(allow_null=True)
    started_by = serializers.CharField(allow_null=True)
    approvals_required = serializers.IntegerField()
    allow_self_approval = serializers.BooleanField()
    approvals = serializers.IntegerField(help_text="approvals so far")
    decisions = DecisionSerializer(many=True)

    def to_representation(self, instance):
        return super().to_representation(selectors.approval_row(instance))


# --- workflows ---------------------------------------------------------------------------


class WorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField(source="current_version.number", allow_null=True)
    dag_hash = serializers.CharField(source="current_version.dag_hash", allow_null=True)
    step_count = serializers.SerializerMethodField()
    schedule = serializers.SerializerMethodField()
    is_paused = serializers.BooleanField()
    next_run_at = serializers.SerializerMethodField()
    last_run_id = serializers.CharField(allow_null=True)
    last_status = serializers.ChoiceField(choices=RunStatus.choices, allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    source = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_step_count(self, workflow) -> int:
        return len(workflow.steps)

    @extend_schema_field({"type": "object", "nullable": True, "additionalProperties": True})
    def get_schedule(self, workflow):
        return schedule_of(workflow)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run_at(self, workflow):
        value = selectors.workflow_next_run(workflow)
        return serializers.DateTimeField().to_representation(value) if value else None


class VersionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    dag_hash = serializers.CharField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True)


class WorkflowDetailSerializer(WorkflowSerializer):
    step_ids = serializers.SerializerMethodField()
    steps = serializers.ListField(child=serializers.DictField())
    definition = serializers.DictField()
    versions = VersionSerializer(many=True, source="versions.all")

    def get_step_ids(self, workflow) -> list[str]:
        return [step["id"] for step in workflow.steps]


class WorkflowDefinitionSerializer(serializers.Serializer):
    """The definition document (SPEC §2); sent as JSON or as YAML."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    input_schema = serializers.DictField(required=False, help_text="JSON Schema 2020-12")
    params = serializers.DictField(required=False)
    schedule = serializers.JSONField(required=False, help_text="{cron, timezone, catchup, input}")
    max_active_runs = serializers.IntegerField(required=False, min_value=1)
    overlap = serializers.ChoiceField(choices=OVERLAP, required=False)
    timeout = serializers.FloatField(required=False)
    triggers = serializers.ListField(child=serializers.DictField(), required=False)
    webhook = serializers.DictField(required=False)
    http = serializers.DictField(required=False)
    notify_url = serializers.CharField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    steps = serializers.ListField(child=serializers.DictField())


class ValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = PathMessageSerializer(many=True)
    warnings = PathMessageSerializer(many=True)


class WorkflowDeletedSerializer(serializers.Serializer):
    name = serializers.CharField()
    runs_removed = serializers.IntegerField()


class DryRunSerializer(serializers.Serializer):
    input = serializers.DictField(required=False, default=dict)
    params = StorableDictField(name="params", required=False)


class PlanStepSerializer(serializers.Serializer):
    step_id = serializers.CharField()
    kind = serializers.CharField()
    layer = serializers.IntegerField()
    depends_on = serializers.ListField(child=serializers.CharField())
    args = serializers.DictField(help_text="the step's settings with templates rendered")


class DryRunPlanSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    dag_hash = serializers.CharField(allow_blank=True)
    input = serializers.JSONField()
    params = serializers.DictField()
    layers = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    steps = PlanStepSerializer(many=True)


# --- overviews ---------------------------------------------------------------------------


class DashboardWorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    last_run_id = serializers.CharField(allow_null=True)
    last_status = serializers.ChoiceField(choices=RunStatus.choices, allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)
    runs_7d = serializers.IntegerField()
    failed_7d = serializers.IntegerField()


class TopFailingSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    failed = serializers.IntegerField()
    total = serializers.IntegerField()
    failure_rate = serializers.FloatField()


class DashboardSerializer(serializers.Serializer):
    workflows = DashboardWorkflowSerializer(many=True)
    active = serializers.DictField(child=serializers.IntegerField(), help_text="runs by status")
    recent_runs = RunSerializer(many=True)
    trends = CalendarDaySerializer(many=True)
    top_failing = TopFailingSerializer(many=True)


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(max_length=200)
    limit = serializers.IntegerField(required=False, default=30, min_value=1, max_value=100)


class SearchWorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)


class SearchStepSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    step_id = serializers.CharField()
    kind = serializers.CharField()


class SearchSerializer(serializers.Serializer):
    workflows = SearchWorkflowSerializer(many=True)
    steps = SearchStepSerializer(many=True)
    runs = RunSerializer(many=True)
    events = EventSerializer(many=True)
