"""Prometheus metrics of the policy engines (registered in the default registry)."""

from prometheus_client import Counter, Gauge

RELOADS = Counter(
    "sidegate_policy_reloads_total",
    "Policy bundle (re)loads by result (ok, failed); a failed reload keeps the running bundle",
    ["result"],
)
BUNDLE_LOADED_AT = Gauge(
    "sidegate_policy_bundle_loaded_timestamp_seconds",
    "Unix time the running policy bundle was compiled",
)
ENGINE_ERRORS = Counter(
    "sidegate_policy_engine_errors_total",
    "Policy evaluations that produced no decision, by engine and kind "
    "(undefined, evaluation, ill_typed, timeout, unavailable); denials are not errors",
    ["engine", "kind"],
)
DECISIONS = Counter(
    "sidegate_policy_decisions_total",
    "Policy decisions by result (allow, deny) and whether dry-run turned a deny into an allow",
    ["result", "dry_run"],
)
DECISION_CACHE = Counter(
    "sidegate_policy_decision_cache_total",
    "Embedded decisions by decision cache result: hit, miss, or bypass (the cache is off or "
    "the loaded policies may decide differently for the same input)",
    ["result"],
)
