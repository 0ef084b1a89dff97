"""Token bucket as GCRA: one stored number per bucket, the theoretical arrival time (µs).

Emission interval ``T = window / requests_per_unit``; capacity ``burst`` tokens, i.e. tolerance
``tau = T * burst``. A take of ``n`` moves the TAT to ``max(tat, now) + n*T`` and is allowed when
that is at most ``tau`` ahead of now. A refused take leaves the state alone; ``n = 0`` peeks.

The interval is stored beside the TAT: when a reload changes the rate, the debt is converted
from time to tokens and back (``tat' = now + (tat - now) * T' / T``), so the tokens already
used survive the change instead of turning into a wait measured at the old rate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    new_state: tuple[int, int]  # (TAT, interval) to store when committed
    remaining: int  # after this take when allowed, else now
    reset_us: int  # until the bucket is full again
    retry_us: int  # refused: until a single hit could pass (-1: never); allowed: 0
    remaining_uncharged: int
    reset_uncharged_us: int


def interval_us(window_ms: int, requests_per_unit: int) -> int:
    # Integer microseconds in Python and Lua alike; the rounding error is below 1 µs per token.
    # At least 1 µs: a bucket refills at most a million tokens a second (and never divides by 0).
    return max((window_ms * 1000) // requests_per_unit, 1) if requests_per_unit else 0


def take(
    state: tuple[int, int] | None,
    now_us: int,
    window_ms: int,
    limit: int,
    burst: int,
    hits: int,
) -> Outcome:
    step = interval_us(window_ms, limit)
    base = now_us
    if state is not None and state[0] > now_us:
        tat, stored_step = state
        base = tat if stored_step == step or not stored_step or not step else (
            now_us + (tat - now_us) * step // stored_step
        )
    ahead = base - now_us
    if limit <= 0 or burst <= 0:
        # requests_per_unit 0 blocks every request (envoyproxy/ratelimit); a peek still passes.
        return Outcome(hits == 0, (base, step), 0, ahead, -1 if hits else 0, 0, ahead)
    tau = step * burst
    left_now = max((tau - ahead) // step, 0)
    new_tat = base + hits * step
    if new_tat - now_us <= tau:
        remaining = (tau - (new_tat - now_us)) // step
        return Outcome(True, (new_tat, step), remaining, new_tat - now_us, 0, left_now, ahead)
    retry = -1 if step > tau else max(base + step - tau - now_us, 0)
    return Outcome(False, (base, step), left_now, ahead, retry, left_now, ahead)


def ttl_ms(new_tat: int, now_us: int) -> int:
    return max((new_tat - now_us + 999) // 1000, 1)
