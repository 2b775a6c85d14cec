"""Every API error in one shape: {"error": message, "code": machine_code, "details": {...}}."""

import logging

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.http import Http404, JsonResponse, UnreadablePostError
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from runs.engine.errors import EngineError
from workflows.definitions import DefinitionError

logger = logging.getLogger(__name__)


def error_body(message: str, code: str, details: dict | None = None) -> dict:
    return {"error": message, "code": code, "details": details or {}}


def _flatten(detail) -> str:
    if isinstance(detail, list):
        return "; ".join(_flatten(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, EngineError):
        set_rollback()
        return Response(error_body(exc.message, exc.code, exc.details), status=exc.status)
    if isinstance(exc, DefinitionError):
        set_rollback()
        return Response(
            error_body(str(exc), "invalid_definition", {"errors": exc.errors}),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"request body is over the limit of {limit} bytes"
        return Response(error_body(message, "too_large"), status=413)
    if isinstance(exc, UnreadablePostError):  # the client went before its body arrived
        set_rollback()
        message = "the request body ended before its Content-Length"
        return Response(error_body(message, "bad_request"), status=400)
    if isinstance(exc, SuspiciousOperation):  # too many query fields, a bad header, …
        set_rollback()
        return Response(error_body(str(exc) or "bad request", "bad_request"), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        detail = exc.detail
        details = {"fields": detail} if isinstance(detail, dict) else {}
        code = exc.get_codes() if not isinstance(detail, dict | list) else exc.default_code
        if isinstance(exc, exceptions.ValidationError):
            code = "invalid"
        return Response(
            error_body(_flatten(detail), str(code), details),
            status=exc.status_code,
            headers=headers,
        )
    logger.exception("unhandled API error", exc_info=exc)
    set_rollback()
    return Response(error_body("internal server error", "server_error"), status=500)


def json_error(status_code: int, message: str, code: str) -> JsonResponse:
    return JsonResponse(error_body(message, code), status=status_code)


API_PREFIX = "/api/"


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Any path under /api/v1 that names no endpoint, whatever the method."""
    return json_error(404, f"no API endpoint at {request.path}", "not_found")


def handler404(request, exception=None):
    if request.path.startswith(API_PREFIX):
        return not_found(request)
    return defaults.page_not_found(request, exception)


def handler400(request, exception=None):
    """A request Django refused before any view (a Host outside ALLOWED_HOSTS, …)."""
    if request.path.startswith(API_PREFIX):
        message = "bad request"
        if isinstance(exception, DisallowedHost):  # its text would echo the Host back
            message = "the Host header names no host this server answers for"
        response = json_error(400, message, "bad_request")
        response["Content-Length"] = str(len(response.content))  # no middleware added it
        return response
    return defaults.bad_request(request, exception)


def handler500(request):
    if request.path.startswith(API_PREFIX):
        return json_error(500, "internal server error", "server_error")
    return defaults.server_error(request)
