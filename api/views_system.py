import time

from django.conf import settings
from django.db import connection
from rest_framework.response import Response
from rest_framework.views import APIView

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


class HealthView(APIView):
    """Liveness and dependencies; no auth."""

    public = True
    authentication_classes = []
    throttle_classes = []

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
