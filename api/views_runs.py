"""Runs: start (one or in bulk), list, detail, cancel, resume, rerun, bulk actions, calendar,
and the approvals inbox."""

from django.core.exceptions import EmptyResultSet
from django.db import connection
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework.response import Response

from api import quick
from api import serializers as s
from api.filters import ApprovalFilter, RunFilter, RunFilterBackend, runs_matching
from api.renderers import FastJSONRenderer
from api.views_base import ApiListView, ApiView, body, query, respond
from runs import maintenance, selectors, services
from runs.status import RUN_TERMINAL, Trigger

CONFLICT = {"POST": [409]}


def start_run(request, workflow, data: dict) -> Response:
    """201 {run_id, status}; 200 with the run for a repeated idempotency key or a run that
    finished within `?wait=`; 202 {run_id, status} when it is still going."""
    wait = query(request, s.WaitQuerySerializer).get("wait") if request.query_params else None
    run, created = services.run_start(
        workflow=workflow,
        input=data.get("input"),
        params=data.get("params"),
        trigger=Trigger.API,
        user=request.user,
        start_at=data.get("start_at"),
        idempotency_key=data.get("idempotency_key") or None,
    )
    if wait:
        run = selectors.run_wait(run.pk, wait)
        if run.status in RUN_TERMINAL:
            return respond(s.RunDetailSerializer, run)
        return respond(s.RunStartedSerializer, {"run_id": run.pk, "status": run.status}, 202)
    if not created:
        return respond(s.RunDetailSerializer, selectors.run_for_api(run.pk))
    return Response({"run_id": str(run.pk), "status": run.status}, status=201)  # RunStarted


START_RESPONSES = {
    201: s.RunStartedSerializer,
    200: s.RunDetailSerializer,
    202: s.RunStartedSerializer,
}


class RunRowsList:
    # A list of runs read as plain rows (`RUN_ROW_COLUMNS`) and shaped by `run_rows`: what
    # RunSerializer would send, without a model instance and a serializer per row. (No
    # docstring: the OpenAPI document takes the view's description from the first one.)

    serializer_class = s.RunSerializer  # describes the rows in the OpenAPI document
    filterset_class = RunFilter
    filter_backends = [RunFilterBackend]

    def get_renderers(self):
        if getattr(getattr(self, "request", None), "method", None) == "GET":  # the rows only
            return [FastJSONRenderer()]
        return super().get_renderers()

    quick_sql = False  # the common shapes of the list in SQL of their own (api.quick)

    def list(self, request, *args, **kwargs):
        found = quick.conditions(request.query_params) if self.quick_sql else None
        if found is not None:
            runs = quick.QuickRuns(*found)
        else:
            runs = self.filter_queryset(self.get_queryset()).values(*s.RUN_ROW_COLUMNS)
        return self.get_paginated_response(s.run_rows(self.paginate_queryset(runs)))

    @staticmethod
    def fetch_page(queryset):
        """The rows of a page: a QuickRuns slice, or a `.values()` queryset, which on
        PostgreSQL is read with psycopg's C loader for timestamps (`timestamptz_loader`).
        Other databases go through the ORM (SQLite needs its converters)."""
        if isinstance(queryset, quick.QuickRuns):
            return queryset.rows()
        if connection.vendor != "postgresql":
            return list(queryset)
        query = queryset.query
        names = [*query.extra_select, *query.values_select, *query.annotation_select]
        try:
            sql, params = query.sql_with_params()
        except EmptyResultSet:
            return []
        with connection.cursor() as cursor:
            cursor.cursor.adapters.register_loader("timestamptz", quick.timestamptz_loader())
            cursor.execute(sql, params)
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class RunListView(RunRowsList, ApiListView):
    quick_sql = True

    def get_queryset(self):
        return selectors.run_queryset()

    @extend_schema(
        request=s.RunStartSerializer,
        parameters=[s.WaitQuerySerializer],
        responses=START_RESPONSES,
        description="Start a run. The same idempotency_key again returns the first run (200).",
    )
    def post(self, request):
        data = quick.start_body(request.data) or body(request, s.RunStartSerializer)
        return start_run(request, data["workflow"], data)


class RunBulkView(ApiView):
    @extend_schema(request=s.BulkStartSerializer, responses={201: s.BulkStartedSerializer})
    def post(self, request):
        data = body(request, s.BulkStartSerializer)
        run_ids = services.run_bulk_start(
            workflow=data["workflow"], inputs=data["inputs"], user=request.user
        )
        return respond(s.BulkStartedSerializer, {"run_ids": run_ids}, 201)


class RunDetailView(ApiView):
    @extend_schema(responses=s.RunDetailSerializer)
    def get(self, request, run_id):
        return respond(s.RunDetailSerializer, selectors.run_for_api(run_id))


class RunCancelView(ApiView):
    error_codes = CONFLICT

    @extend_schema(request=s.CancelSerializer, responses=s.RunDetailSerializer)
    def post(self, request, run_id):
        data = body(request, s.CancelSerializer)
        services.run_cancel(
            run_id=run_id,
            grace_seconds=data.get("grace_seconds"),
            wait_for_running=data["wait_for_running"],
        )
        return respond(s.RunDetailSerializer, selectors.run_for_api(run_id))


class RunResumeView(ApiView):
    error_codes = CONFLICT

    @extend_schema(request=None, responses=s.RunDetailSerializer)
    def post(self, request, run_id):
        services.run_resume(run_id=run_id)
        return respond(s.RunDetailSerializer, selectors.run_for_api(run_id))


class RunRerunView(ApiView):
    error_codes = CONFLICT

    @extend_schema(
        request=s.RerunSerializer,
        responses=PolymorphicProxySerializer(
            component_name="RerunResult",
            serializers=[s.RunDetailSerializer, s.RerunPlanSerializer],
            resource_type_field_name=None,
        ),
    )
    def post(self, request, run_id):
        data = body(request, s.RerunSerializer)
        result = services.run_rerun(
            run_id=run_id, from_step=data["from_step"], dry_run=data["dry_run"]
        )
        if data["dry_run"]:
            plan = {"run_id": run_id, "dry_run": True, "steps": result}
            return respond(s.RerunPlanSerializer, plan)
        return respond(s.RunDetailSerializer, selectors.run_for_api(run_id))


def bulk_targets(data: dict) -> list[str]:
    if "run_ids" in data:
        return data["run_ids"]
    matching = runs_matching(data["filter"]).values_list("pk", flat=True)
    return list(matching[: maintenance.MAX_BULK_ACTION + 1])


class RunBulkCancelView(ApiView):
    @extend_schema(request=s.BulkCancelSerializer, responses=s.BulkResultSerializer(many=True))
    def post(self, request):
        data = body(request, s.BulkCancelSerializer)
        results = maintenance.runs_bulk_cancel(
            bulk_targets(data),
            grace_seconds=data.get("grace_seconds"),
            wait_for_running=data["wait_for_running"],
        )
        return respond(s.BulkResultSerializer, results, many=True)


class RunBulkResumeView(ApiView):
    @extend_schema(request=s.BulkActionSerializer, responses=s.BulkResultSerializer(many=True))
    def post(self, request):
        data = body(request, s.BulkActionSerializer)
        results = maintenance.runs_bulk_resume(bulk_targets(data))
        return respond(s.BulkResultSerializer, results, many=True)


class RunCalendarView(ApiView):
    @extend_schema(
        parameters=[s.CalendarQuerySerializer], responses=s.CalendarDaySerializer(many=True)
    )
    def get(self, request):
        days = query(request, s.CalendarQuerySerializer)["days"]
        return respond(s.CalendarDaySerializer, selectors.run_calendar(days), many=True)


class ApprovalListView(ApiListView):
    """Every step waiting for approval, oldest first."""

    serializer_class = s.ApprovalSerializer
    filterset_class = ApprovalFilter

    def get_queryset(self):
        return selectors.approvals_inbox()
