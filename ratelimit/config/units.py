"""Rate-limit units and window lengths."""

from __future__ import annotations

import re

from envoy.service.ratelimit.v3 import rls_pb2

_Unit = rls_pb2.RateLimitResponse.RateLimit

# Seconds per unit, as envoyproxy/ratelimit divides time (month = 30 days, year = 365 days).
UNIT_SECONDS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
    "month": 2592000,
    "year": 31536000,
}

UNIT_ENUM: dict[str, int] = {
    "second": _Unit.SECOND,
    "minute": _Unit.MINUTE,
    "hour": _Unit.HOUR,
    "day": _Unit.DAY,
    "week": _Unit.WEEK,
    "month": _Unit.MONTH,
    "year": _Unit.YEAR,
}

ENUM_SECONDS: dict[int, int] = {UNIT_ENUM[name]: s for name, s in UNIT_SECONDS.items()}

_WINDOW = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_WINDOW_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_unit(text: object) -> str | None:
    """The unit's canonical name (case-insensitive), or None when it is not a unit."""
    if not isinstance(text, str):
        return None
    name = text.strip().lower()
    return name if name in UNIT_SECONDS else None


def parse_window_ms(text: object) -> int | None:
    """``30s``, ``5m``, ``1h``, ``250ms`` ... as milliseconds; None when malformed or zero."""
    if not isinstance(text, str):
        return None
    match = _WINDOW.match(text)
    if match is None:
        return None
    value = int(match.group(1)) * _WINDOW_MS[match.group(2)]
    return value or None


def unit_for_window_ms(window_ms: int) -> int:
    """The proto unit whose length is exactly the window, else UNKNOWN (no unit can say it)."""
    for name, seconds in UNIT_SECONDS.items():
        if seconds * 1000 == window_ms:
            return UNIT_ENUM[name]
    return _Unit.UNKNOWN
