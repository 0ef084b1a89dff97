"""The ShouldRateLimit service: descriptors -> rules -> one atomic take -> RateLimitResponse."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from envoy.service.ratelimit.v3 import rls_pb2

from sidegate.common import tracing
from sidegate.ratelimit import metrics
from sidegate.ratelimit.buckets.base import (
    Backend,
    BackendUnavailable,
    BucketError,
    BucketRequest,
    BucketResult,
)
from sidegate.ratelimit.buckets.memory import MemoryBackend
from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.loader import load_from_settings
from sidegate.ratelimit.config.model import Domain, Limit, RuleSet
from sidegate.ratelimit.failover import FailoverBackend
from sidegate.ratelimit.local_cache import OverLimitCache
from sidegate.ratelimit.matching import Match, find_rule, override_match
from sidegate.ratelimit.reload import rule_reloader, rule_watcher
from sidegate.ratelimit.response import (
    OK,
    OVER_LIMIT,
    DescriptorOutcome,
    dynamic_metadata,
    limit_headers,
    overall_code,
    unlimited_outcome,
)
from sidegate.ratelimit.rule_stats import RuleStats

if TYPE_CHECKING:
    from sidegate.common.file_watcher import FileWatcher
    from sidegate.ratelimit.settings import RateLimitSettings

log = structlog.get_logger("sidegate.ratelimit")

_CODE_NAMES = {OK: "OK", OVER_LIMIT: "OVER_LIMIT"}
_MATCH_CACHE_SIZE = 50_000


class RateLimitUnavailable(Exception):
    """The backend is down or slow and the domain's failure mode is ``error``."""


class RateLimitRequestError(Exception):
    """The request itself is invalid (empty domain, no descriptors)."""


@dataclass(slots=True)
class _Checked:
    """One limited descriptor and the buckets it takes from (one per limit of its rule)."""

    index: int
    match: Match
    hits: int
    buckets: list[BucketRequest] = field(default_factory=list)


def _bucket_key(domain: str, limit: Limit, counter_path: str) -> str:
    # The domain is the hash tag: every key of a request lives in one Redis Cluster slot.
    # Request values are hashed: they may be credentials and must not sit in Redis in clear.
    digest = hashlib.blake2b(counter_path.encode(), digest_size=12).hexdigest()
    return f"{{{domain}}}:{limit.identity}:{digest}"


class RateLimitService:
    def __init__(
        self,
        settings: RateLimitSettings,
        rules: RuleSet,
        backend: Backend | FailoverBackend,
        *,
        over_limit_cache: OverLimitCache | None = None,
    ) -> None:
        self.settings = settings
        self._rules = rules
        self.backend = backend
        self.over_limit_cache = over_limit_cache
        self.stats = RuleStats(settings.near_limit_ratio, settings.detailed_metric_max_series)
        self._watcher: FileWatcher | None = None
        self.reloader = rule_reloader(self)
        self._matches: dict[tuple[str, tuple[tuple[str, str], ...]], Match | None] = {}
        self._matches_for: RuleSet | None = None
        self._header_names = (
            settings.response_headers.limit_header,
            settings.response_headers.remaining_header,
            settings.response_headers.reset_header,
        )
        metrics.RULES_LOADED.set(rules.rule_count)

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimitService:
        rules = load_from_settings(settings)
        metrics.CONFIG_LOADS.labels("success").inc()
        backend: Backend | FailoverBackend
        if settings.backend == "redis":
            from sidegate.ratelimit.buckets.redis import RedisBackend

            backend = FailoverBackend(
                RedisBackend.from_settings(settings.redis),
                retry_interval=settings.redis.retry_interval_seconds,
                local=MemoryBackend(max_keys=settings.memory.max_keys),
            )
        else:
            backend = MemoryBackend(max_keys=settings.memory.max_keys)
        cache = None
        # An in-process store needs no shortcut: it already answers without a round trip.
        if settings.local_cache.enabled and settings.backend == "redis":
            cache = OverLimitCache(settings.local_cache.max_entries)
        return cls(settings, rules, backend, over_limit_cache=cache)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def ready(self) -> bool:
        if isinstance(self.backend, FailoverBackend) and not self.backend.up:
            return self.settings.failure_mode != "error"
        return True

    async def start(self) -> None:
        await self.backend.start()
        self.start_watching()

    def start_watching(self) -> None:
        if self.settings.reload.watch and self._watcher is None:
            self._watcher = rule_watcher(
                self.settings.rules_dir, self.reload_async, self.settings.reload.interval_seconds
            )
            self._watcher.start()

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        await self.backend.close()

    @property
    def watcher(self) -> FileWatcher | None:
        return self._watcher

    async def reload_async(self, trigger: str = "watch") -> bool:
        """Re-read every rule file in a worker thread; swap on the loop, or keep the old rules."""
        return await self.reloader.run(trigger)

    def reload(self) -> bool:
        """Re-read every rule file now (blocking); swap, or keep the old rules when any is bad."""
        try:
            rules = load_from_settings(self.settings)
        except RuleConfigError as exc:
            metrics.CONFIG_LOADS.labels("error").inc()
            log.error("ratelimit_reload_failed", error=str(exc))
            return False
        self.install_rules(rules)
        return True

    def install_rules(self, rules: RuleSet) -> None:
        """One reference swap: a request sees the old rules or the new, never a mix."""
        self._rules = rules
        if self.over_limit_cache is not None:
            # Limits may have grown: the cached "over until T" answers no longer hold.
            self.over_limit_cache.clear()
        metrics.CONFIG_LOADS.labels("success").inc()
        metrics.RULES_LOADED.set(rules.rule_count)
        log.info(
            "ratelimit_rules_loaded",
            files=len(rules.files),
            rules=rules.rule_count,
            domains=sorted(rules.domains),
        )

    async def should_rate_limit(
        self, request: rls_pb2.RateLimitRequest
    ) -> rls_pb2.RateLimitResponse:
        started = time.perf_counter()
        outcome = "error"
        summary: list[dict[str, object]] = []
        degraded: str | None = None
        try:
            response, summary, degraded = await self._decide(request)
            outcome = "over_limit" if response.overall_code == OVER_LIMIT else "ok"
            return response
        except RateLimitRequestError:
            outcome = "invalid"
            raise
        except RateLimitUnavailable:
            outcome = "unavailable"
            raise
        finally:
            elapsed = time.perf_counter() - started
            tracing.set_attributes(
                **{"sidegate.domain": request.domain, "sidegate.code": outcome,
                   "sidegate.failure_mode": degraded}
            )
            metrics.call_counter(outcome).inc()
            metrics.call_histogram(outcome).observe(elapsed)
            log.info(
                "should_rate_limit",
                domain=request.domain,
                code=outcome,
                descriptors=summary,
                hits_addend=request.hits_addend,
                failure_mode=degraded,
                duration_ms=round(elapsed * 1000, 3),
            )

    async def peek(
        self, request: rls_pb2.RateLimitRequest
    ) -> tuple[rls_pb2.RateLimitResponse, list[dict[str, object]]]:
        """The answer ``request`` would get now, charging nothing (``sidegate explain``).

        Every descriptor asks with ``hits_addend`` 0, which reads the buckets without taking.
        """
        peeked = rls_pb2.RateLimitRequest()
        peeked.CopyFrom(request)
        for descriptor in peeked.descriptors:
            descriptor.hits_addend.value = 0
            descriptor.hits_addend.SetInParent()  # present even at 0: a peek, not the default
        response, summary, _ = await self._decide(peeked)
        return response, summary

    async def _decide(
        self, request: rls_pb2.RateLimitRequest
    ) -> tuple[rls_pb2.RateLimitResponse, list[dict[str, object]], str | None]:
        if not request.domain:
            raise RateLimitRequestError("rate limit domain must not be empty")
        if not request.descriptors:
            raise RateLimitRequestError("rate limit descriptor list must not be empty")
        rules = self._rules
        domain = rules.domains.get(request.domain)
        if domain is None:
            metrics.DOMAIN_NOT_FOUND.inc()
        default_hits = max(1, request.hits_addend)
        matches: list[tuple[Match | None, int]] = []
        for descriptor in request.descriptors:
            hits = (
                descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
            )
            match = None
            if domain is not None:
                entries = tuple((e.key, e.value) for e in descriptor.entries)
                if descriptor.HasField("limit"):
                    match = override_match(
                        request.domain, entries, descriptor.limit, domain.default_algorithm
                    )
                else:
                    match = self._find(rules, domain, entries)
            matches.append((match, hits))
        replaced = {name for m, _ in matches if m is not None for name in m.rule.replaces}
        outcomes = [DescriptorOutcome() for _ in matches]
        checked: list[_Checked] = []
        for index, (match, hits) in enumerate(matches):
            if match is None or (match.rule.name and match.rule.name in replaced):
                continue
            if match.rule.unlimited:
                outcomes[index] = unlimited_outcome()
                continue
            checked.append(self._buckets_for(request.domain, index, match, hits))
        degraded = None
        if checked:
            degraded = await self._take(request.domain, checked, outcomes)
        response = rls_pb2.RateLimitResponse(
            overall_code=overall_code(outcomes, self.settings.quota_mode)
        )
        for outcome in outcomes:
            outcome.fill(response.statuses.add())
        if response.overall_code == OVER_LIMIT and self.settings.shadow_mode:
            metrics.GLOBAL_SHADOW_MODE.inc()
            response.overall_code = OK
        if self.settings.response_headers.enabled:
            response.response_headers_to_add.extend(
                limit_headers(outcomes, self._header_names, self.settings.quota_mode)
            )
        if self.settings.response_dynamic_metadata:
            response.dynamic_metadata.CopyFrom(
                dynamic_metadata(request, [m.metadata if m else None for m, _ in matches])
            )
        summary = [
            {
                "keys": ",".join(e.key for e in d.entries),
                "rule": m.rule.stat_key if m is not None else None,
                "code": _CODE_NAMES.get(o.code, "UNKNOWN"),
                "remaining": o.remaining if o.limit is not None else None,
            }
            for d, (m, _), o in zip(request.descriptors, matches, outcomes, strict=True)
        ]
        return response, summary, degraded

    def _find(
        self, rules: RuleSet, domain: Domain, entries: tuple[tuple[str, str], ...]
    ) -> Match | None:
        """find_rule, memoised per rule set: hot descriptors repeat, the walk need not."""
        if self._matches_for is not rules:
            self._matches_for = rules
            self._matches = {}
        cache_key = (domain.name, entries)
        try:
            return self._matches[cache_key]
        except KeyError:
            pass
        match = find_rule(domain, entries)
        if len(self._matches) >= _MATCH_CACHE_SIZE:
            self._matches.clear()  # request values are unbounded; start over rather than grow
        self._matches[cache_key] = match
        return match

    def _buckets_for(self, domain: str, index: int, match: Match, hits: int) -> _Checked:
        templates = match.buckets
        if templates is None:
            rule = match.rule
            enforce = not (rule.shadow_mode or rule.quota_mode or self.settings.quota_mode)
            stop = self.settings.stop_cache_key_increment_when_overlimit
            templates = tuple(
                BucketRequest(
                    key=_bucket_key(domain, limit, match.counter_path),
                    algorithm=limit.algorithm,
                    limit=limit.requests_per_unit,
                    window_ms=limit.window_ms,
                    burst=limit.burst,
                    hits=0,
                    enforce=enforce,
                    always_charge=(
                        limit.algorithm == "fixed_window"
                        and self.settings.fixed_window_count_rejected
                        and not stop
                    ),
                    stop_increment=limit.algorithm == "fixed_window" and stop,
                )
                for limit in rule.limits
            )
            match.buckets = templates  # a memoised Match keeps its keys
        buckets = [
            BucketRequest(t.key, t.algorithm, t.limit, t.window_ms, t.burst, hits, t.enforce,
                          t.always_charge, t.stop_increment)
            for t in templates
        ]
        return _Checked(index=index, match=match, hits=hits, buckets=buckets)

    async def _take(
        self, domain: str, checked: list[_Checked], outcomes: list[DescriptorOutcome]
    ) -> str | None:
        flat = [bucket for item in checked for bucket in item.buckets]
        flat_rules = [item.match.rule.stat_key for item in checked for _ in item.buckets]
        cache = self.over_limit_cache
        # Seconds-to-reset of buckets the over-limit cache already knows (None: ask the store).
        known: list[float | None] = [
            cache.lookup(b.key) if cache is not None and b.hits > 0 else None for b in flat
        ] if cache is not None else [None] * len(flat)
        refused_locally = any(
            left is not None and b.enforce for left, b in zip(known, flat, strict=True)
        )
        to_store = []
        store_rules = []
        for bucket, left, rule in zip(flat, known, flat_rules, strict=True):
            if left is not None:
                continue
            if refused_locally and not bucket.always_charge:
                # The request is refused already: look at the others without charging them.
                bucket = dataclasses.replace(bucket, hits=0)
            to_store.append(bucket)
            store_rules.append(rule)
        degraded: str | None = None
        results: list[BucketResult] | None = []
        if to_store:
            with tracing.span("sidegate.bucket_take", **{"sidegate.buckets": len(to_store)}):
                results, degraded = await self._backend_take(domain, to_store, store_rules)
        if results is None:
            return degraded  # failure mode "allow": every descriptor is OK, no limit reported
        answered = iter(results)
        position = 0
        for item in checked:
            per_limit: list[tuple[Limit, BucketResult, bool]] = []
            for limit, bucket in zip(item.match.rule.limits, item.buckets, strict=True):
                left = known[position]
                position += 1
                if left is not None:
                    metrics.LOCAL_CACHE_HITS.inc()
                    left_ms = math.ceil(left * 1000)
                    result = BucketResult(False, 0, left_ms, left_ms)
                else:
                    result = next(answered)
                    if (cache is not None and not result.allowed and bucket.enforce
                            and bucket.hits > 0 and degraded is None):
                        over_ms = result.retry_ms if result.retry_ms > 0 else result.reset_ms
                        cache.add(bucket.key, over_ms / 1000, result.reset_ms / 1000)
                per_limit.append((limit, result, left is not None))
            outcomes[item.index] = self._outcome(domain, item, per_limit)
        return degraded

    async def _backend_take(
        self, domain: str, buckets: list[BucketRequest], rules: list[str]
    ) -> tuple[list[BucketResult] | None, str | None]:
        backend = self.backend
        if isinstance(backend, FailoverBackend):
            mode = self.settings.failure_mode_for(domain)
            try:
                return await backend.take(buckets, mode)
            except BackendUnavailable as exc:
                raise RateLimitUnavailable(f"rate limit backend unavailable: {exc}") from None
            except BucketError as exc:
                # One corrupted key fails this request only: the backend is not down.
                index = exc.index
                known = index is not None and 0 <= index < len(rules)
                involved = sorted({rules[index]} if index is not None and known else set(rules))
                metrics.BUCKET_ERRORS.labels(domain).inc()
                log.error(
                    "ratelimit_bucket_error",
                    domain=domain,
                    rules=involved,
                    failure_mode=mode,
                    error=str(exc),
                )
                try:
                    return backend.fallback(buckets, mode, str(exc))
                except BackendUnavailable:
                    raise RateLimitUnavailable(
                        f"rate limit bucket unusable for rule {', '.join(involved)}"
                    ) from None
        return await backend.take(buckets), None

    def _outcome(
        self,
        domain: str,
        item: _Checked,
        per_limit: list[tuple[Limit, BucketResult, bool]],
    ) -> DescriptorOutcome:
        rule = item.match.rule
        label = self.stats.label(domain, item.match.stat_key, rule.stat_key, item.match.detailed)
        chosen: tuple[Limit, BucketResult, bool] | None = None
        for entry in per_limit:
            limit, result, from_cache = entry
            self.stats.record(
                domain,
                label,
                limit=limit.requests_per_unit,
                hits=item.hits,
                remaining=result.remaining,
                over=not result.allowed,
                shadow=rule.shadow_mode,
                from_cache=from_cache,
            )
            if chosen is None:
                chosen = entry
            elif not result.allowed and chosen[1].allowed:
                chosen = entry
            elif result.allowed == chosen[1].allowed and result.remaining < chosen[1].remaining:
                chosen = entry
        assert chosen is not None
        limit, result, _ = chosen
        code = OK if result.allowed or rule.shadow_mode else OVER_LIMIT
        return DescriptorOutcome(
            code=code,
            limit=limit,
            remaining=result.remaining,
            reset_seconds=(result.reset_ms + 999) // 1000,
            quota_mode=rule.quota_mode,
        )
