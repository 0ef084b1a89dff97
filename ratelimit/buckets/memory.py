"""In-process buckets with the same semantics as the Redis script (one suite tests both).

Memory is bounded by ``max_keys`` (``ratelimit.memory.max_keys``). What is forgotten first is
what carries no state: a bucket past its expiry is full again (a token bucket whose TAT has
passed, a fixed window that has ended), exactly as if it had never been seen. Then the least
recently used bucket that still has room. A bucket that is exhausted (it refused, or has
nothing left) is kept while any bucket with room exists, so flooding the store with fresh
descriptor values cannot reset a quota someone has used up. Only when every stored bucket is
exhausted does the least recently used exhausted one go.

Eviction is incremental: each insert into a full store looks at a bounded number of the least
recently used entries (``_SCAN``) and removes one; nothing ever walks the whole store, so no
take blocks the event loop for longer than a few dict operations.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from sidegate.ratelimit.algorithms import fixed_window, token_bucket
from sidegate.ratelimit.buckets.base import BucketRequest, BucketResult

# Entries examined per eviction (and per take's housekeeping): bounded work on the loop.
_SCAN = 16
_REAP_PER_TAKE = 2


def wall_clock_us() -> int:
    return time.time_ns() // 1000


_Entry = tuple[Any, int]  # (state, expires_at_us)


class MemoryBackend:
    """Buckets in two LRU dicts; a take runs without awaiting, so it is atomic on the loop."""

    name = "memory"

    def __init__(self, clock: Callable[[], int] = wall_clock_us, max_keys: int = 1_000_000) -> None:
        self.clock = clock
        self.max_keys = max(max_keys, 1)
        # Least recently used first. A key lives in exactly one of the two.
        self._open: OrderedDict[str, _Entry] = OrderedDict()
        self._exhausted: OrderedDict[str, _Entry] = OrderedDict()
        self.evictions = 0  # live buckets forgotten for room (expired ones are not counted)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._open.clear()
        self._exhausted.clear()

    def __len__(self) -> int:
        return len(self._open) + len(self._exhausted)

    def __contains__(self, key: str) -> bool:
        return key in self._open or key in self._exhausted

    def _get(self, key: str, now: int) -> Any:
        entry = self._open.get(key)
        if entry is None:
            entry = self._exhausted.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            self._forget(key)
            return None
        return entry[0]

    def _forget(self, key: str) -> None:
        if self._open.pop(key, None) is None:
            self._exhausted.pop(key, None)

    def _put(self, key: str, state: Any, expires: int, exhausted: bool, now: int) -> None:
        self._forget(key)
        (self._exhausted if exhausted else self._open)[key] = (state, expires)
        while len(self) > self.max_keys:
            self._evict_one(now)

    def _touch(self, key: str, exhausted: bool) -> None:
        """A use without a write: the bucket becomes most recently used, in its current class."""
        entry = self._open.pop(key, None)
        if entry is None:
            entry = self._exhausted.pop(key, None)
        if entry is not None:
            (self._exhausted if exhausted else self._open)[key] = entry

    def _evict_one(self, now: int) -> None:
        for store in (self._open, self._exhausted):
            for key, (_, expires) in itertools.islice(store.items(), _SCAN):
                if expires <= now:
                    del store[key]
                    return
        self.evictions += 1
        (self._open or self._exhausted).popitem(last=False)

    def _reap(self, now: int) -> None:
        """Drop a few expired buckets from the old end, so idle memory is given back."""
        for store in (self._open, self._exhausted):
            for _ in range(_REAP_PER_TAKE):
                if not store:
                    break
                key, (_, expires) = next(iter(store.items()))
                if expires > now:
                    break
                del store[key]

    async def take(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        return self.take_now(buckets)

    def take_now(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        now = self.clock()
        now_s = now // 1_000_000
        self._reap(now)
        outcomes: list[Any] = []
        refused = False
        stop_over: int | None = None
        for index, bucket in enumerate(buckets):
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
            if stop_over is None and bucket.stop_increment and not outcome.allowed:
                stop_over = index
        results = []
        for index, (bucket, outcome) in enumerate(zip(buckets, outcomes, strict=True)):
            commit = _commits(bucket, outcome.allowed, index, refused, stop_over)
            if bucket.algorithm == "token_bucket":
                results.append(self._token_result(bucket, outcome, commit, now))
            else:
                results.append(self._window_result(bucket, outcome, commit, now, now_s))
        return results

    def _token_result(
        self, bucket: BucketRequest, outcome: token_bucket.Outcome, commit: bool, now: int
    ) -> BucketResult:
        if commit or not outcome.allowed:
            remaining, reset_us = outcome.remaining, outcome.reset_us
        else:
            remaining, reset_us = outcome.remaining_uncharged, outcome.reset_uncharged_us
        exhausted = not outcome.allowed or remaining == 0
        if commit and outcome.allowed and bucket.hits:
            self._put(bucket.key, outcome.new_state, outcome.new_state[0], exhausted, now)
        else:
            self._touch(bucket.key, exhausted)
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
        remaining = (
            outcome.remaining if commit or not outcome.allowed else (outcome.remaining_uncharged)
        )
        exhausted = not outcome.allowed or remaining == 0
        if commit and bucket.hits:
            expires = (now_s + outcome.reset_s) * 1_000_000
            self._put(bucket.key, outcome.new_state, expires, exhausted, now)
        else:
            self._touch(bucket.key, exhausted)
        reset_ms = outcome.reset_s * 1000
        return BucketResult(
            outcome.allowed, remaining, reset_ms, 0 if outcome.allowed else reset_ms
        )


def _commits(
    bucket: BucketRequest, allowed: bool, index: int, refused: bool, stop_over: int | None
) -> bool:
    """Whether this bucket's hits are written (the same rule as lua/take.lua)."""
    if bucket.always_charge:
        return True
    if bucket.stop_increment:
        # Upstream charges the key that goes over and spares every other key of the request.
        return index == stop_over or (stop_over is None and not refused)
    return allowed and not refused
