import re

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

from api.recent import Recent

WHOLE_NUMBER = re.compile(r"^[0-9]+\Z")
MAX_OFFSET = 2**63 - 1  # what a database OFFSET can hold


COUNT_CAP = 10_000
# Counts from this size up may be reused for COUNT_CACHE_SECONDS; smaller ones are cheap
# to make and always exact.
COUNT_CACHE_MIN = 1_000
PAGE_PARAMS = ("limit", "offset", "sort")


# Counts of list queries, per web worker process.
counts = Recent(size=256)


class RunPagination(LimitOffsetPagination):
    """`limit` (default 50; above 1000 reads as 1000) and `offset`; a value that is not a
    whole number in range is a 400, not silently the default.

    `count` is exact up to 10,000 rows past the page. Beyond that the answer says
    `"count_capped": true` and `count` is a lower bound: counting a million matching
    rows would cost far more than the page itself. A count of 1,000 or more may be up to
    `TRELLIS_COUNT_CACHE_SECONDS` (default 5) old: each web worker reuses it for that
    long for the same list and filters. The page itself is always read fresh."""

    default_limit = 50
    max_limit = 1000

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        horizon = max(COUNT_CAP, self.offset + self.limit)
        max_age = settings.TRELLIS_API["COUNT_CACHE_SECONDS"]
        key = count_key(request, horizon) if max_age > 0 else None
        found = counts.get(key, max_age) if key is not None else None
        cached = found is not None
        if not cached:
            found = queryset.order_by()[: horizon + 1].count()
            if key is not None and found >= COUNT_CACHE_MIN:
                counts.put(key, found)
        self.count_capped = found > horizon
        self.count = found
        if not cached and (self.count == 0 or self.offset > self.count):
            return []
        fetch = getattr(view, "fetch_page", list)
        return fetch(queryset[self.offset : self.offset + self.limit])

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        if self.count_capped:
            response.data["count_capped"] = True
        return response

    def get_paginated_response_schema(self, schema):
        answer = super().get_paginated_response_schema(schema)
        answer["properties"]["count_capped"] = {
            "type": "boolean",
            "description": "present and true when `count` is only a lower bound",
        }
        return answer

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


def count_key(request, horizon: int):
    """What a list's count depends on: the list (its path) and its filters."""
    filters = tuple(
        sorted(
            (name, tuple(values))
            for name, values in request.query_params.lists()
            if name not in PAGE_PARAMS
        )
    )
    return request.path, filters, horizon
