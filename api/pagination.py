import re

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

WHOLE_NUMBER = re.compile(r"^[0-9]+$")
MAX_OFFSET = 2**63 - 1  # what a database OFFSET can hold


class RunPagination(LimitOffsetPagination):
    """`limit` (default 50; above 1000 reads as 1000) and `offset`; a value that is not a
    whole number in range is a 400, not silently the default."""

    default_limit = 50
    max_limit = 1000

    def get_limit(self, request):
        limit = _whole_number(request, self.limit_query_param, minimum=1, maximum=None)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        offset = _whole_number(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET)
        return offset or 0


def _whole_number(request, name: str, minimum: int, maximum: int | None) -> int | None:
    if name not in request.query_params:
        return None
    raw = request.query_params[name]
    value = None
    if WHOLE_NUMBER.match(raw):
        value = int(raw) if len(raw) <= 20 else MAX_OFFSET + 1
        if maximum is None:
            value = min(value, MAX_OFFSET)  # a limit past any count reads as the maximum
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise ValidationError({name: [f"{name} must be a whole number {bound}, not {raw[:40]!r}"]})
    return value
