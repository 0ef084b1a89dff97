"""envoyproxy/ratelimit's per-rule stats on Prometheus, with bounded label cardinality."""

from __future__ import annotations

from typing import Any

from sidegate.ratelimit import metrics

KINDS = (
    "total_hits", "over_limit", "near_limit", "within_limit", "shadow_mode",
    "over_limit_with_local_cache",
)


class RuleStats:
    def __init__(self, near_limit_ratio: float, max_detailed_series: int) -> None:
        self.near_limit_ratio = near_limit_ratio
        self.max_detailed_series = max_detailed_series
        self._detailed: set[tuple[str, str]] = set()
        # (domain, rule) -> kind -> counter child; bounded like the label values themselves
        self._series: dict[tuple[str, str], dict[str, Any]] = {}

    def label(self, domain: str, stat_key: str, rolled_up: str, detailed: bool) -> str:
        """The rule label; request values only while the detailed series stay under the cap."""
        if not detailed or stat_key == rolled_up:
            return rolled_up
        key = (domain, stat_key)
        if key in self._detailed:
            return stat_key
        if len(self._detailed) < self.max_detailed_series:
            self._detailed.add(key)
            return stat_key
        return rolled_up

    def record(
        self,
        domain: str,
        rule: str,
        *,
        limit: int,
        hits: int,
        remaining: int,
        over: bool,
        shadow: bool,
        from_cache: bool,
    ) -> None:
        series = self._series.get((domain, rule))
        if series is None:
            series = self._series[(domain, rule)] = {
                kind: metrics.RULE_HITS.labels(domain, rule, kind) for kind in KINDS
            }
        series["total_hits"].inc(hits)
        if over:
            series["over_limit"].inc(hits)
            if from_cache:
                series["over_limit_with_local_cache"].inc(hits)
            if shadow:
                series["shadow_mode"].inc(hits)
            return
        series["within_limit"].inc(hits)
        # The hits that landed above near = floor(limit * ratio), as envoyproxy/ratelimit counts.
        near = int(limit * self.near_limit_ratio)
        after = limit - remaining
        before = after - hits
        if after > near:
            series["near_limit"].inc(after - max(near, before))
