class EngineError(Exception):
    """A request the engine refuses; `code` is machine-readable, `status` the HTTP status."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, code: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class Conflict(EngineError):
    status = 409
    code = "conflict"


class Forbidden(EngineError):
    status = 403
    code = "forbidden"


class NotFound(EngineError):
    status = 404
    code = "not_found"


class InvalidInput(EngineError):
    status = 400
    code = "invalid_input"
