"""envoyproxy/ratelimit's per-rule stats on Prometheus, with bounded label cardinality."""

from __future__ import annotations

from ratelimit import metrics


class RuleStats:
    def __init__(self, near_limit_ratio: float, max_detailed_series: int) -> None:
        self.near_limit_ratio = near_limit_ratio
        self.max_detailed_series = max_detailed_series
        self._detailed: set[tuple[str, str]] = set()

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
        counter = metrics.RULE_HITS
        counter.labels(domain, rule, "total_hits").inc(hits)
        if over:
            counter.labels(domain, rule, "over_limit").inc(hits)
            if from_cache:
                counter.labels(domain, rule, "over_limit_with_local_cache").inc(hits)
            if shadow:
                counter.labels(domain, rule, "shadow_mode").inc(hits)
            return
        counter.labels(domain, rule, "within_limit").inc(hits)
        # The hits that landed above near = floor(limit * ratio), as envoyproxy/ratelimit counts.
        near = int(limit * self.near_limit_ratio)
        after = limit - remaining
        before = after - hits
        if after > near:
            counter.labels(domain, rule, "near_limit").inc(after - max(near, before))
