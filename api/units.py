"""Durations like `30d` and byte counts like `1.2 MB`, as the API and CLI read and print them."""

import re
from datetime import timedelta

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.IGNORECASE)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SECONDS = 100 * 366 * 86400


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w`; a bare number is days. Raises ValueError."""
    match = DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number with s, m, h, d or w (30d)")
    seconds = float(match.group(1)) * UNIT_SECONDS[(match.group(2) or "d").lower()]
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is too long: at most 100 years")
    return timedelta(seconds=seconds)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
