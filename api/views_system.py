import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from api import serializers as s
from api.units import human_bytes, parse_duration
from api.views_base import ApiView, body, query, respond
from runs import maintenance, selectors
from runs.engine.errors import InvalidInput

STARTED = time.monotonic()


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def broker_status() -> str:
    if not settings.REDIS_URL:
        return "orm"
    try:
        from runs.engine.dispatch import broker

        return "redis" if broker().ping() else "unreachable"
    except Exception:
        return "unreachable"


def workers_alive() -> int:
    from django_q.status import Stat

    try:
        return sum(len(stat.workers) for stat in Stat.get_all())
    except Exception:
        return 0


def database_size() -> int | None:
    """Bytes the database takes on disk (SQLite: the file and its WAL)."""
    try:
        if connection.vendor == "sqlite":
            name = Path(connection.settings_dict["NAME"])
            files = [name, Path(f"{name}-wal"), Path(f"{name}-shm")]
            return sum(f.stat().st_size for f in files if f.exists())
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_database_size(current_database())")
                return int(cursor.fetchone()[0])
    except Exception:
        return None
    return None


class HealthView(ApiView):
    """Liveness and dependencies; no auth."""

    public = True
    authentication_classes = []
    throttle_classes = []

    @extend_schema(responses={200: s.HealthSerializer, 503: s.HealthSerializer}, auth=[])
    def get(self, request):
        db = database_ok()
        body = {
            "status": "ok" if db else "degraded",
            "version": settings.VERSION,
            "uptime_seconds": int(time.monotonic() - STARTED),
            "database": "ok" if db else "unreachable",
            "broker": broker_status(),
            "workers": workers_alive(),
        }
        return Response(body, status=200 if db else 503)


class SystemInfoView(ApiView):
    @extend_schema(responses=s.SystemInfoSerializer)
    def get(self, request):
        size = database_size()
        info = {
            "version": settings.VERSION,
            "database": connection.vendor,
            "db_size_bytes": size,
            "db_size": human_bytes(size) if size is not None else None,
            "max_concurrent_runs": settings.TRELLIS["MAX_CONCURRENT_RUNS"],
            "workers_alive": workers_alive(),
            **selectors.system_counts(),
        }
        return respond(s.SystemInfoSerializer, info)


class PurgeView(ApiView):
    """Delete finished runs older than a duration, with their logs, outputs and events."""

    required_scope = "admin"

    @extend_schema(request=s.PurgeSerializer, responses=s.PurgeResultSerializer)
    def post(self, request):
        data = body(request, s.PurgeSerializer)
        if "days" in data:
            age = parse_duration(f"{data['days']}d")
        else:
            try:
                age = parse_duration(data["older_than"])
            except ValueError as exc:
                raise InvalidInput(str(exc), details={"field": "older_than"}) from None
        result = maintenance.purge_runs(older_than=age)
        result["freed"] = human_bytes(result["freed_bytes"])
        return respond(s.PurgeResultSerializer, result)


class DashboardView(ApiView):
    @extend_schema(responses=s.DashboardSerializer)
    def get(self, request):
        return respond(s.DashboardSerializer, selectors.dashboard())


class SearchView(ApiView):
    @extend_schema(parameters=[s.SearchQuerySerializer], responses=s.SearchSerializer)
    def get(self, request):
        params = query(request, s.SearchQuerySerializer)
        return respond(s.SearchSerializer, selectors.search(params["q"], params["limit"]))
