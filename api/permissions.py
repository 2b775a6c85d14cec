from rest_framework import permissions

from api.models import ApiToken

SAFE = permissions.SAFE_METHODS


def scopes_of(request) -> set[str]:
    """A token has its scopes; a session user has what their account allows."""
    if isinstance(request.auth, ApiToken):
        return request.auth.scope_set
    user = request.user
    if user and user.is_authenticated:
        return {"read", "run", "admin"} if user.is_staff else {"read", "run"}
    return set()


class ScopePermission(permissions.BasePermission):
    """Views declare `required_scope` (or per-action `scope_map`); default: read for safe
    methods, the view's `write_scope` (default run) otherwise."""

    message = "this token lacks the scope this request needs"

    def has_permission(self, request, view):
        if getattr(view, "public", False):
            return True
        if not (request.user and request.user.is_authenticated):
            return False
        needed = required_scope(request, view)
        granted = scopes_of(request)
        if "admin" in granted:
            return True
        if needed == "read":
            return bool(granted & {"read", "run"})
        return needed in granted


def required_scope(request, view) -> str:
    action = getattr(view, "action", None)
    scope_map = getattr(view, "scope_map", {})
    if action in scope_map:
        return scope_map[action]
    if hasattr(view, "required_scope"):
        return view.required_scope
    return "read" if request.method in SAFE else getattr(view, "write_scope", "run")
