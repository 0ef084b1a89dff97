"""In-process buckets with the same semantics as the Redis script (one suite tests both)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from sidegate.ratelimit.algorithms import fixed_window, token_bucket
from sidegate.ratelimit.buckets.base import BucketRequest, BucketResult


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class MemoryBackend:
    """Buckets in a dict; a take runs without awaiting, so it is atomic on the event loop."""

    name = "memory"

    def __init__(self, clock: Callable[[], int] = wall_clock_us, max_keys: int = 1_000_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._state: dict[str, tuple[Any, int]] = {}  # key -> (state, expires_at_us)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._state.clear()

    def __len__(self) -> int:
        return len(self._state)

    def _get(self, key: str, now: int) -> Any:
        entry = self._state.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._state[key]
            return None
        return entry[0]

    def _sweep(self, now: int) -> None:
        expired = [key for key, (_, expires) in self._state.items() if expires <= now]
        for key in expired:
            del self._state[key]
        # Still full of live buckets: forget the oldest tenth (they restart full), so memory
        # stays bounded whatever the request values.
        excess = len(self._state) - self.max_keys + max(self.max_keys // 10, 1)
        if excess > 0:
            for key in list(itertools.islice(self._state, excess)):
                del self._state[key]

    async def take(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        return self.take_now(buckets)

    def take_now(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        now = self.clock()
        now_s = now // 1_000_000
        outcomes: list[Any] = []
        refused = False
        for bucket in buckets:
            stored = self._get(bucket.key, now)
            if bucket.algorithm == "token_bucket":
                outcome: Any = token_bucket.take(
                    stored, now, bucket.window_ms, bucket.limit, bucket.burst, bucket.hits
                )
            else:
                outcome = fixed_window.take(
                    stored, now_s, bucket.window_ms // 1000, bucket.limit, bucket.hits
                )
            outcomes.append(outcome)
            refused = refused or (bucket.enforce and not outcome.allowed)
        if len(self._state) >= self.max_keys:
            self._sweep(now)
        results = []
        for bucket, outcome in zip(buckets, outcomes, strict=True):
            commit = bucket.always_charge or (outcome.allowed and not refused)
            if bucket.algorithm == "token_bucket":
                results.append(self._token_result(bucket, outcome, commit, now))
            else:
                results.append(self._window_result(bucket, outcome, commit, now, now_s))
        return results

    def _token_result(
        self, bucket: BucketRequest, outcome: token_bucket.Outcome, commit: bool, now: int
    ) -> BucketResult:
        if commit and outcome.allowed and bucket.hits:
            self._state[bucket.key] = (outcome.new_state, outcome.new_state[0])
        if commit or not outcome.allowed:
            remaining, reset_us = outcome.remaining, outcome.reset_us
        else:
            remaining, reset_us = outcome.remaining_uncharged, outcome.reset_uncharged_us
        retry = outcome.retry_us if outcome.retry_us <= 0 else (outcome.retry_us + 999) // 1000
        return BucketResult(outcome.allowed, remaining, (reset_us + 999) // 1000, retry)

    def _window_result(
        self,
        bucket: BucketRequest,
        outcome: fixed_window.Outcome,
        commit: bool,
        now: int,
        now_s: int,
    ) -> BucketResult:
        if commit and bucket.hits:
            expires = (now_s + outcome.reset_s) * 1_000_000
            self._state[bucket.key] = (outcome.new_state, expires)
        remaining = (
            outcome.remaining if commit or not outcome.allowed else (outcome.remaining_uncharged)
        )
        reset_ms = outcome.reset_s * 1000
        return BucketResult(
            outcome.allowed, remaining, reset_ms, 0 if outcome.allowed else reset_ms
        )
