"""Prometheus metrics of the identity stage (default registry).

Label values are bounded: source names come from config, outcomes and reasons from the
fixed vocabularies below; nothing derived from a request or a credential becomes a label.
"""

from prometheus_client import Counter, Gauge, Histogram

VERIFICATIONS = Counter(
    "sidegate_identity_verifications_total",
    "Identity decisions by source, outcome (ok, rejected, unavailable, anonymous, missing) "
    "and reason (a fixed vocabulary per verifier)",
    ["source", "outcome", "reason"],
)
JWKS_FETCHES = Counter(
    "sidegate_identity_jwks_fetches_total",
    "Discovery/JWKS fetches by outcome (ok, error) and trigger (startup, ttl, unknown_kid)",
    ["outcome", "trigger"],
)
JWKS_STALE_SERVED = Counter(
    "sidegate_identity_jwks_stale_total",
    "Refreshes that failed while the last good keys kept serving",
)
JWKS_WAITS_ABANDONED = Counter(
    "sidegate_identity_jwks_waits_abandoned_total",
    "Requests that stopped waiting for a JWKS fetch at their deadline (answered 503)",
)
CACHE_LOOKUPS = Counter(
    "sidegate_identity_cache_lookups_total",
    "Verified-credential cache lookups by cache and result (hit, miss)",
    ["cache", "result"],
)

# --- API keys and OAuth2 introspection (issue 4) -----------------------------------------------
# Endpoint labels are configured URLs without query; keys and tokens are never labels.
API_KEY_CHECKS = Counter(
    "sidegate_identity_api_key_checks_total",
    "API key verifications by result (ok, unknown, disabled, expired, wrong_service, "
    "duplicate, empty, unavailable)",
    ["source", "result"],
)
API_KEYS_LOADED = Gauge(
    "sidegate_identity_api_keys_loaded",
    "API keys held by in-memory (file) key stores",
    ["store"],
)
API_KEY_RELOADS = Counter(
    "sidegate_identity_api_key_file_reloads_total",
    "API key file reloads by result (ok; error: the previous keys were kept)",
    ["result"],
)
INTROSPECTION_REQUESTS = Counter(
    "sidegate_identity_introspection_requests_total",
    "Introspection calls to the authorization server by result (active, inactive, refused, error)",
    ["endpoint", "result"],
)
INTROSPECTION_FAILURES = Counter(
    "sidegate_identity_introspection_failures_total",
    "Introspection outages by cause (status, status_4xx, not_json, bad_response, timeout, "
    "connection, circuit_open, overloaded, deadline)",
    ["endpoint", "cause"],
)
INTROSPECTION_SECONDS = Histogram(
    "sidegate_identity_introspection_seconds",
    "Introspection round-trip time (cache misses only)",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INTROSPECTION_CACHE = Counter(
    "sidegate_identity_introspection_cache_total",
    "Introspection cache lookups by result (hit, negative_hit, miss)",
    ["endpoint", "result"],
)
BREAKER_STATE = Gauge(
    "sidegate_identity_breaker_state",
    "Circuit breaker state per endpoint: 0 closed, 1 open, 2 half-open",
    ["endpoint"],
)
BREAKER_TRANSITIONS = Counter(
    "sidegate_identity_breaker_transitions_total",
    "Circuit breaker state changes per endpoint",
    ["endpoint", "to"],
)
