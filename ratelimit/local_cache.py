"""Keys known to be over their limit until a deadline, answered without the backend until then."""

from __future__ import annotations

import time
from collections.abc import Callable

from sidegate.ratelimit import metrics


class OverLimitCache:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        # key -> (over until, bucket reset at), both on ``clock``
        self._until: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def lookup(self, key: str) -> float | None:
        """Seconds until the over-limit key's bucket resets, or None when it is not known over."""
        entry = self._until.get(key)
        if entry is None:
            return None
        now = self.clock()
        if entry[0] <= now:
            del self._until[key]
            return None
        return max(entry[1] - now, 0.0)

    def add(self, key: str, over_seconds: float, reset_seconds: float) -> None:
        if over_seconds <= 0:
            return
        now = self.clock()
        if key not in self._until and len(self._until) >= self.max_entries:
            self._purge(now)
        self._until[key] = (now + over_seconds, now + max(reset_seconds, over_seconds))
        metrics.LOCAL_CACHE_SIZE.set(len(self._until))

    def clear(self) -> None:
        self._until.clear()
        metrics.LOCAL_CACHE_SIZE.set(0)

    def _purge(self, now: float) -> None:
        for key in [k for k, (until, _) in self._until.items() if until <= now]:
            del self._until[key]
        # Still full: forget the oldest entries (the backend answers them again, exactly).
        while len(self._until) >= self.max_entries:
            del self._until[next(iter(self._until))]
