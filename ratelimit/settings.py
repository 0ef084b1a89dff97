"""The ``ratelimit`` section of sidegate's config file, owned by the rate-limit package."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sidegate.ratelimit.buckets.redis_pipeline import STANDALONE_QUERY_KEYS, unknown_query_keys

FailureMode = Literal["error", "allow", "local"]
Algorithm = Literal["token_bucket", "fixed_window"]
DefaultAlgorithm = Literal["auto", "token_bucket", "fixed_window"]


class _Strict(BaseModel):
    # validate_default: defaults get the same validation (and path resolution) as given values.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's directory (loader passes base_dir)."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


class RedisSettings(_Strict):
    # redis:// or rediss:// (standalone), redis+cluster://host:port[,host:port],
    # redis+sentinel://host:port[,host:port]/<master name>[/<db>]
    url: str = "redis://127.0.0.1:6379/0"
    # Prepended to every key (and inside the hash tag) so several deployments can share a Redis.
    key_prefix: str = "sidegate:rl:"
    # Bounded so a slow Redis costs at most this per call (envoyproxy/ratelimit#462).
    timeout_seconds: float = Field(default=0.25, gt=0)
    # Seconds to connect to Redis.
    connect_timeout_seconds: float = Field(default=0.5, gt=0)
    # Calls waiting on Redis at once (more queue inside the timeout). Standalone Redis: all of
    # them pipelined on one connection; Cluster and Sentinel: pooled connections per node.
    max_connections: int = Field(default=64, ge=1)
    # After a failure Redis is not tried again for this long (calls use the failure mode),
    # then one call probes it.
    retry_interval_seconds: float = Field(default=1.0, ge=0)

    @field_validator("url")
    @classmethod
    def _known_query(cls, value: str) -> str:
        # A parameter the connection would ignore (mTLS files, say) must not pass silently.
        unknown = unknown_query_keys(value)
        if unknown:
            raise ValueError(
                f"unsupported URL parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(STANDALONE_QUERY_KEYS))}"
            )
        return value

    @field_validator("key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        # The domain is the key's hash tag; a brace in the prefix would become the tag instead.
        if "{" in value or "}" in value:
            raise ValueError("key_prefix must not contain '{' or '}' (the domain is the hash tag)")
        return value


class LocalCacheSettings(_Strict):
    """Keys known to be over their limit until time T are answered without Redis until T."""

    # Remember over-limit keys until their reset so that Redis is not asked again (Redis backend).
    enabled: bool = True
    # Over-limit keys remembered (bounded).
    max_entries: int = Field(default=100_000, ge=1)


class MemorySettings(_Strict):
    """The in-process buckets (backend ``memory``, and failure mode ``local``)."""

    # Most buckets kept. Past it the store forgets expired (full) buckets first, then the least
    # recently used ones that still have room; exhausted buckets go last (docs/ratelimit.md).
    max_keys: int = Field(default=1_000_000, ge=1)


class ResponseHeaderSettings(_Strict):
    """Optional RateLimit-* response headers, named as envoyproxy/ratelimit names them."""

    # Add RateLimit-* headers (draft-ietf-httpapi-ratelimit-headers) to responses.
    enabled: bool = False
    # Name of the limit header.
    limit_header: str = "RateLimit-Limit"
    # Name of the remaining-requests header.
    remaining_header: str = "RateLimit-Remaining"
    # Name of the seconds-until-reset header.
    reset_header: str = "RateLimit-Reset"


class ReloadSettings(_Strict):
    # Poll the rules directory (ConfigMap ..data swaps included); SIGHUP reloads regardless.
    watch: bool = True
    # Seconds between looks at the rules directory.
    interval_seconds: float = Field(default=1.0, gt=0)


class RateLimitSettings(_Strict):
    # Serve envoy.service.ratelimit.v3.RateLimitService (false: leave it out of the process).
    enabled: bool = True
    # Directory of envoyproxy/ratelimit-format domain files, relative to the config file.
    rules_dir: Path = Path("examples/ratelimit")
    # memory: buckets in this process; redis: shared by every instance (one round trip per call).
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisSettings = Field(default_factory=RedisSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    # What a call gets when Redis fails or is slow: a gRPC UNAVAILABLE (Envoy's
    # failure_mode_deny decides), an OK answer, or in-process buckets with the same limits.
    failure_mode: FailureMode = "error"
    # failure_mode per domain, overriding failure_mode.
    failure_mode_by_domain: dict[str, FailureMode] = Field(default_factory=dict)
    # Algorithm of rules that name none. auto: a rule file in envoyproxy/ratelimit's format (no
    # sidegate extension key) counts in its epoch-aligned fixed windows, exactly as upstream
    # answers; a file that uses sidegate's extensions (tiers, burst, limits, ...) gets token
    # buckets. token_bucket / fixed_window: that algorithm for every file.
    default_algorithm: DefaultAlgorithm = "auto"
    # envoyproxy/ratelimit counts rejected hits in fixed windows; False makes them all-or-nothing
    # like token buckets (a refused request charges no fixed window at all).
    fixed_window_count_rejected: bool = True
    # envoyproxy/ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT, for fixed windows: when a
    # window of the request goes over, that one is charged and the request's others are not.
    stop_cache_key_increment_when_overlimit: bool = False
    # envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG: several files may extend one domain.
    merge_domain_config: bool = False
    # Global SHADOW_MODE / QUOTA_MODE of envoyproxy/ratelimit.
    shadow_mode: bool = False
    # envoyproxy/ratelimit's QUOTA_MODE for every rule.
    quota_mode: bool = False
    # Share of a limit from which hits count as near_limit in the per-rule metrics.
    near_limit_ratio: float = Field(default=0.8, gt=0, le=1)
    local_cache: LocalCacheSettings = Field(default_factory=LocalCacheSettings)
    response_headers: ResponseHeaderSettings = Field(default_factory=ResponseHeaderSettings)
    # envoyproxy/ratelimit's RESPONSE_DYNAMIC_METADATA: domain, descriptors and rule metadata.
    response_dynamic_metadata: bool = False
    reload: ReloadSettings = Field(default_factory=ReloadSettings)
    # Upper bound on per-value metric series created by `detailed_metric` rules.
    detailed_metric_max_series: int = Field(default=1000, ge=0)

    _resolve_rules_dir = field_validator("rules_dir")(_resolve)

    @model_validator(mode="after")
    def _one_charging_rule(self) -> RateLimitSettings:
        if self.stop_cache_key_increment_when_overlimit and not self.fixed_window_count_rejected:
            raise ValueError(
                "stop_cache_key_increment_when_overlimit and fixed_window_count_rejected: false "
                "are two different charging rules for fixed windows: set one"
            )
        return self

    def failure_mode_for(self, domain: str) -> FailureMode:
        return self.failure_mode_by_domain.get(domain, self.failure_mode)
