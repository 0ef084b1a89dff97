"""Prometheus metrics of the Check service (registered in the default registry)."""

from prometheus_client import Counter, Histogram

CHECKS = Counter(
    "sidegate_authz_checks_total",
    "Check calls by outcome (allowed, denied, unauthenticated, unavailable, invalid, error)",
    ["outcome"],
)
CHECK_SECONDS = Histogram(
    "sidegate_authz_check_seconds",
    "Check handler latency",
    ["outcome"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
POLICY_EVAL_SECONDS = Histogram(
    "sidegate_authz_policy_eval_seconds",
    "Policy evaluation time",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25),
)
