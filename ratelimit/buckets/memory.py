"""In-process buckets with the same semantics as the Redis script (one suite tests both).

Memory is bounded by ``max_keys`` (``ratelimit.memory.max_keys``). What is forgotten first is
what carries no state: a bucket past its expiry is full again (a token bucket whose TAT has
passed, a fixed window that has ended), exactly as if it had never been seen. Then the least
recently used bucket that still has room. A bucket that is exhausted (it refused, or has
nothing left) is kept while any bucket with room exists, so flooding the store with fresh
descriptor values cannot reset a quota someone has used up. Only when every stored bucket is
exhausted does the least recently used exhausted one go.

Eviction is incremental: each insert into a full store looks at a bounded number of the least
recently used entries (``_SCAN``) and removes one; nothing ever walks the whole store. Large
stores are split into shards by key hash (the order above holds within a shard), so that even
Python's own occasional dict resize stays small: no take blocks the event loop for long.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from sidegate.ratelimit.algorithms import fixed_window, token_bucket
from sidegate.ratelimit.buckets.base import BucketRequest, BucketResult

# Entries examined per eviction: bounded work on the loop.
_SCAN = 8
# Every _REAP_EVERY takes, up to _REAP expired buckets leave from the old end of one shard.
_REAP_EVERY = 16
_REAP = 8
# Buckets per shard from which the store is split. Python grows and compacts a dict in one
# step, O(its size): a single 300,000-entry OrderedDict under churn stalled ~80 ms now and
# then; shards of at most a few thousand entries keep each such step short.
_SHARD_SIZE = 4096
_MAX_SHARDS = 256


def wall_clock_us() -> int:
    return time.time_ns() // 1000


_Entry = tuple[Any, int]  # (state, expires_at_us)


class _Shard:
    """Two LRU dicts (least recently used first); a key lives in at most one of them."""

    __slots__ = ("exhausted", "limit", "open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: OrderedDict[str, _Entry] = OrderedDict()
        self.exhausted: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.open) + len(self.exhausted)

    def get(self, key: str, now: int) -> Any:
        entry = self.open.get(key)
        if entry is None:
            entry = self.exhausted.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            if self.open.pop(key, None) is None:
                self.exhausted.pop(key, None)
            return None
        return entry[0]

    def put(self, key: str, entry: _Entry, exhausted: bool, now: int) -> int:
        """Store; returns how many live buckets had to be forgotten for room."""
        open_, spent = self.open, self.exhausted
        if open_.pop(key, None) is None:
            spent.pop(key, None)
        (spent if exhausted else open_)[key] = entry
        evicted = 0
        while len(open_) + len(spent) > self.limit:
            evicted += self._evict_one(now)
        return evicted

    def touch(self, key: str, exhausted: bool) -> None:
        """A use without a write: the bucket becomes most recently used, in its current class."""
        entry = self.open.pop(key, None)
        if entry is None:
            entry = self.exhausted.pop(key, None)
        if entry is not None:
            (self.exhausted if exhausted else self.open)[key] = entry

    def _evict_one(self, now: int) -> int:
        for store in (self.open, self.exhausted):
            for key, entry in itertools.islice(store.items(), _SCAN):
                if entry[1] <= now:
                    del store[key]
                    return 0
        (self.open or self.exhausted).popitem(last=False)
        return 1

    def reap(self, now: int) -> None:
        for store in (self.open, self.exhausted):
            expired = [
                key for key, entry in itertools.islice(store.items(), _REAP) if entry[1] <= now
            ]
            for key in expired:
                del store[key]


class MemoryBackend:
    """Buckets in LRU shards; a take runs without awaiting, so it is atomic on the loop."""

    name = "memory"

    def __init__(self, clock: Callable[[], int] = wall_clock_us, max_keys: int = 1_000_000) -> None:
        self.clock = clock
        self.max_keys = max(max_keys, 1)
        # Keys are spread by hash; each shard holds its share of max_keys, and the eviction
        # order holds within a shard (one shard, exact order, for stores up to _SHARD_SIZE).
        count = min(max(self.max_keys // _SHARD_SIZE, 1), _MAX_SHARDS)
        self._shards = [_Shard(self.max_keys // count) for _ in range(count)]
        self.evictions = 0  # live buckets forgotten for room (expired ones are not counted)
        self._takes = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for shard in self._shards:
            shard.open.clear()
            shard.exhausted.clear()

    def __len__(self) -> int:
        return sum(len(shard) for shard in self._shards)

    def __contains__(self, key: str) -> bool:
        shard = self._shard(key)
        return key in shard.open or key in shard.exhausted

    def _shard(self, key: str) -> _Shard:
        shards = self._shards
        return shards[hash(key) % len(shards)] if len(shards) > 1 else shards[0]

    def _put(self, key: str, state: Any, expires: int, exhausted: bool, now: int) -> None:
        self.evictions += self._shard(key).put(key, (state, expires), exhausted, now)

    def _reap(self, now: int) -> None:
        """Drop a few expired buckets from the old end of one shard, so idle memory is given
        back (a different shard each time)."""
        self._shards[(self._takes // _REAP_EVERY) % len(self._shards)].reap(now)

    async def take(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        return self.take_now(buckets)

    def take_now(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        now = self.clock()
        now_s = now // 1_000_000
        self._takes += 1
        if self._takes % _REAP_EVERY == 0:
            self._reap(now)
        outcomes: list[Any] = []
        refused = False
        stop_over: int | None = None
        for index, bucket in enumerate(buckets):
            stored = self._shard(bucket.key).get(bucket.key, now)
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
            self._shard(bucket.key).touch(bucket.key, exhausted)
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
            self._shard(bucket.key).touch(bucket.key, exhausted)
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
