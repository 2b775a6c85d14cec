"""What is inside a run: steps with attempts, logs, outputs, events, and approval decisions."""

import json
from itertools import islice

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.negotiation import BaseContentNegotiation

from api import serializers as s
from api.views_base import ApiView, body, query, respond
from runs import selectors, services
from runs.engine.errors import Forbidden

TIMESTAMP = s.serializers.DateTimeField()


class StepListView(ApiView):
    @extend_schema(responses=s.StepDetailSerializer(many=True))
    def get(self, request, run_id):
        run = selectors.run_for_api(run_id)
        return respond(s.StepDetailSerializer, selectors.step_details(run), many=True)


class StepDetailView(ApiView):
    @extend_schema(responses=s.StepDetailSerializer)
    def get(self, request, run_id, step_id):
        run = selectors.run_for_api(run_id)
        return respond(s.StepDetailSerializer, selectors.step_details(run, step_id)[0])


class StepLogView(ApiView):
    @extend_schema(parameters=[s.LogQuerySerializer], responses=s.StepLogSerializer)
    def get(self, request, run_id, step_id):
        options = query(request, s.LogQuerySerializer)
        run = selectors.run_for_api(run_id)
        return respond(s.StepLogSerializer, selectors.run_step_log(run, step_id, **options))


class StepApproveView(ApiView):
    """Needs the `runs.approve_steprun` permission; 409 unless the step waits for approval."""

    approve = True
    error_codes = {"POST": [409]}

    @extend_schema(request=s.DecideSerializer, responses=s.DecisionResultSerializer)
    def post(self, request, run_id, step_id):
        if not request.user.has_perm("runs.approve_steprun"):
            raise Forbidden(
                "approving or rejecting a step needs the runs.approve_steprun permission",
                code="permission_denied",
            )
        comment = body(request, s.DecideSerializer)["comment"]
        decide = services.step_approve if self.approve else services.step_reject
        step = decide(run_id=run_id, step_id=step_id, user=request.user, comment=comment)
        result = {
            "step_id": step.step_id,
            "status": "approved" if self.approve else "rejected",
            "step_status": step.status,
        }
        return respond(s.DecisionResultSerializer, result)


class StepRejectView(StepApproveView):
    """One rejection fails the step."""

    approve = False


class RunOutputsView(ApiView):
    @extend_schema(parameters=[s.OutputQuerySerializer], responses=s.OutputSerializer(many=True))
    def get(self, request, run_id):
        step_id = query(request, s.OutputQuerySerializer).get("step_id")
        run = selectors.run_for_api(run_id)
        return respond(s.OutputSerializer, selectors.run_outputs(run, step_id), many=True)


def records_of(request, run_id: str, step_id: str) -> tuple[str, list]:
    """(key, records) of the list output `?key=` names, or of the step's first one."""
    key = query(request, s.RecordsQuerySerializer).get("key")
    return selectors.step_records(selectors.run_for_api(run_id), step_id, key)


class StepPreviewView(ApiView):
    """The first 50 records of a step's list output."""

    @extend_schema(parameters=[s.RecordsQuerySerializer], responses=s.PreviewSerializer)
    def get(self, request, run_id, step_id):
        key, records = records_of(request, run_id, step_id)
        preview = {"step_id": step_id, "key": key, **selectors.records_preview(records)}
        return respond(s.PreviewSerializer, preview)


class StepProfileView(ApiView):
    """Per column of a step's list output: type, nulls, min, max, distinct values."""

    @extend_schema(parameters=[s.RecordsQuerySerializer], responses=s.ProfileSerializer)
    def get(self, request, run_id, step_id):
        key, records = records_of(request, run_id, step_id)
        profile = {
            "step_id": step_id,
            "key": key,
            "rows": len(records),
            "columns": selectors.records_profile(records),
        }
        return respond(s.ProfileSerializer, profile)


class RunLogsView(ApiView):
    """Log lines of every step; stderr lines have level `error`, stdout lines `info`."""

    @extend_schema(parameters=[s.LogLinesQuerySerializer], responses=s.LogLineSerializer(many=True))
    def get(self, request, run_id):
        options = query(request, s.LogLinesQuerySerializer)
        limit = options.pop("limit")
        run = selectors.run_for_api(run_id)
        lines = list(islice(selectors.iter_log_lines(run, **options), limit))
        return respond(s.LogLineSerializer, lines, many=True)


class AnyAccept(BaseContentNegotiation):
    """A download answers with its own content type whatever the client accepts."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def text_line(line: dict) -> str:
    timestamp = TIMESTAMP.to_representation(line["timestamp"])
    where = f"{line['step_id']}#{line['attempt']}"
    return f"{timestamp} {where} {line['stream']} | {line['message']}\n"


def json_line(line: dict) -> str:
    return json.dumps({**line, "timestamp": TIMESTAMP.to_representation(line["timestamp"])}) + "\n"


class RunLogExportView(ApiView):
    """The whole log of a run as a file: text lines, or JSON lines with ?format=jsonl."""

    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[s.LogExportQuerySerializer],
        responses={
            (200, "text/plain"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
        },
    )
    def get(self, request, run_id):
        options = query(request, s.LogExportQuerySerializer)
        jsonl = options.pop("format") == "jsonl"
        run = selectors.run_for_api(run_id)
        lines = selectors.iter_log_lines(run, **options)
        response = StreamingHttpResponse(
            map(json_line if jsonl else text_line, lines),
            content_type="application/x-ndjson" if jsonl else "text/plain; charset=utf-8",
        )
        filename = f"run-{run.pk}.{'jsonl' if jsonl else 'log'}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class RunEventsView(ApiView):
    """The run's event stream (the WebSocket's messages), `?after=<seq>` to catch up."""

    @extend_schema(parameters=[s.EventQuerySerializer], responses=s.EventSerializer(many=True))
    def get(self, request, run_id):
        options = query(request, s.EventQuerySerializer)
        run = selectors.run_for_api(run_id)
        events = selectors.run_events(run, after=options["after"], limit=options["limit"])
        return respond(s.EventSerializer, events, many=True)
