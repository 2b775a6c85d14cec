"""Per-user rate limit (`TRELLIS_THROTTLE_USER`, default 100000/min) as a fixed-window
counter.

DRF's UserRateThrottle keeps the timestamp of every request of the last window in one
cache entry and reads and writes it whole at every request: at thousands of requests a
minute that list is costlier than the request. Here a user may make up to the rate in
each window of the rate's duration (so at most twice the rate across a window's edge).
With REDIS_URL the counters are shared by every web process (see `_shared_hit`); on the
embedded default they live in the `default` cache, local to each web worker process.
"""

import threading

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import UserRateThrottle

PREFIX = "trellis:throttle:"
_redis = None
_redis_lock = threading.Lock()


def _redis_client():
    global _redis
    if _redis is None:
        with _redis_lock:
            if _redis is None:
                import redis

                _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


def hit(key: str, seconds: int, limit: int) -> int:
    """Count one request under `key` (which names its window); the count so far."""
    if settings.REDIS_URL:
        return _shared_hit(key, seconds, limit)
    cache.add(PREFIX + key, 0, seconds + 1)
    try:
        return cache.incr(PREFIX + key)
    except ValueError:  # expired between add and incr
        cache.set(PREFIX + key, 1, seconds + 1)
        return 1


# Per key: [the shared total last seen, requests counted here and not yet added to it].
_counted: dict[str, list[int]] = {}
_counted_lock = threading.Lock()


def _shared_hit(key: str, seconds: int, limit: int) -> int:
    """A web worker adds its requests to the shared counter in batches of a thousandth of
    the limit (one by one below 2,000 requests per window, so small limits are exact):
    at the default 100000/min, one Redis round trip per 100 requests. What a worker has
    not added yet (fewer than a batch) is unseen by the others."""
    batch = max(1, limit // 1000)
    with _counted_lock:
        if len(_counted) > 4096:  # old windows' entries
            _counted.clear()
        entry = _counted.setdefault(key, [0, 0])
        entry[1] += 1
        if entry[1] < batch:
            return entry[0] + entry[1]
        pending, entry[1] = entry[1], 0
    client = _redis_client()
    total = client.incrby(PREFIX + key, pending)
    if total == pending:  # a new window's counter; it names its window, so it can expire
        client.expire(PREFIX + key, seconds + 1)
    entry[0] = total
    return total


def forget_counts() -> None:
    with _counted_lock:
        _counted.clear()


class UserWindowThrottle(UserRateThrottle):
    """UserRateThrottle's scope, rate and 429, counted in fixed windows."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        self.window_ends = (window + 1) * self.duration
        count = hit(f"{self.key}:{window}", self.duration, self.num_requests)
        return count <= self.num_requests

    def wait(self):
        return max(self.window_ends - self.timer(), 0.001)
