"""Fixed window exactly as envoyproxy/ratelimit counts: epoch-aligned windows, one counter each.

State is ``(window_start_s, count)``. ``after = count + hits``; over when ``after > limit``
(so a peek, hits 0, is over only when the count already exceeds the limit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    new_state: tuple[int, int]
    remaining: int
    reset_s: int
    remaining_uncharged: int


def take(
    stored: tuple[int, int] | None, now_s: int, window_s: int, limit: int, hits: int
) -> Outcome:
    start = now_s - now_s % window_s
    count = stored[1] if stored is not None and stored[0] == start else 0
    after = count + hits
    reset = start + window_s - now_s
    allowed = after <= limit
    return Outcome(
        allowed=allowed,
        new_state=(start, after),
        remaining=limit - after if allowed else 0,
        reset_s=reset,
        remaining_uncharged=max(limit - count, 0),
    )
