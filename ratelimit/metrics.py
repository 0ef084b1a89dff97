"""Prometheus metrics of the ShouldRateLimit service (registered in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from sidegate.common.metric_children import LabelledChildren

CALLS = Counter(
    "sidegate_ratelimit_calls_total",
    "ShouldRateLimit calls by outcome (ok, over_limit, invalid, unavailable, error)",
    ["outcome"],
)
CALL_SECONDS = Histogram(
    "sidegate_ratelimit_call_seconds",
    "ShouldRateLimit handler latency by outcome",
    ["outcome"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
# envoyproxy/ratelimit's per-rule stats; `rule` is the config path (values only for rules
# that opted into detailed_metric / value_to_metric, bounded by detailed_metric_max_series).
RULE_HITS = Counter(
    "sidegate_ratelimit_rule_hits_total",
    "Hits per rule: total_hits, over_limit, near_limit, within_limit, shadow_mode, "
    "over_limit_with_local_cache",
    ["domain", "rule", "kind"],
)
DOMAIN_NOT_FOUND = Counter(
    "sidegate_ratelimit_domain_not_found_total", "Calls for a domain no rule file defines"
)
GLOBAL_SHADOW_MODE = Counter(
    "sidegate_ratelimit_global_shadow_mode_total",
    "OVER_LIMIT answers turned into OK by the global shadow mode",
)
CONFIG_LOADS = Counter(
    "sidegate_ratelimit_config_loads_total", "Rule set loads by result (success, error)", ["result"]
)
RULES_LOADED = Gauge("sidegate_ratelimit_rules", "Rules in the active rule set")
BACKEND_SECONDS = Histogram(
    "sidegate_ratelimit_backend_seconds",
    "Time of one backend take (one Redis round trip)",
    ["backend"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
BACKEND_ERRORS = Counter(
    "sidegate_ratelimit_backend_errors_total", "Failed backend takes", ["backend"]
)
BUCKET_ERRORS = Counter(
    "sidegate_ratelimit_bucket_errors_total",
    "Requests failed by an unusable bucket key (wrong type, corrupted value); not an outage",
    ["domain"],
)
BACKEND_UP = Gauge(
    "sidegate_ratelimit_backend_up", "1 while the shared backend answers", ["backend"]
)
BACKEND_TRANSITIONS = Counter(
    "sidegate_ratelimit_backend_transitions_total",
    "Backend health changes (to: up, down)",
    ["backend", "to"],
)
FAILURE_MODE_CALLS = Counter(
    "sidegate_ratelimit_failure_mode_total",
    "Calls answered by the failure mode while the backend was down (error, allow, local)",
    ["mode"],
)
LOCAL_CACHE_HITS = Counter(
    "sidegate_ratelimit_local_cache_hits_total",
    "Buckets answered OVER_LIMIT from the local over-limit cache without the backend",
)
LOCAL_CACHE_SIZE = Gauge("sidegate_ratelimit_local_cache_entries", "Keys in the over-limit cache")


# Counted on every call: children looked up once per outcome (common/metric_children.py).
call_counter = LabelledChildren(CALLS)
call_histogram = LabelledChildren(CALL_SECONDS)
