"""The strict key whitelist of rule files, checked on the raw YAML before anything is parsed."""

from __future__ import annotations

from typing import Any

from sidegate.ratelimit.config.errors import RuleConfigError

# envoyproxy/ratelimit's whitelist.
UPSTREAM_KEYS = frozenset(
    {
        "domain",
        "key",
        "value",
        "descriptors",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "unlimited",
        "shadow_mode",
        "quota_mode",
        "name",
        "replaces",
        "detailed_metric",
        "value_to_metric",
        "share_threshold",
        "metadata",
    }
)
# sidegate's additions: several limits per descriptor, any window, burst, algorithm, tiers.
EXTENSION_KEYS = frozenset(
    {
        "limits",
        "window",
        "burst",
        "algorithm",
        "tiers",
        "tier_key",
        "consumer_key",
        "default",
        "quotas",
    }
)
ALLOWED_KEYS = UPSTREAM_KEYS | EXTENSION_KEYS

# Maps whose keys are user data: metadata is opaque; quotas are keyed by tier name.
_OPAQUE = frozenset({"metadata"})
_NAMED = frozenset({"quotas"})


def _go_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_keys(file: str, node: Any) -> None:
    """Every map key is a string from the whitelist; lists hold only maps."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise RuleConfigError(
                    file, f"config error, key is not of type string: {_go_repr(key)}"
                )
            if key not in ALLOWED_KEYS:
                raise RuleConfigError(file, f"config error, unknown key '{key}'")
            if key in _OPAQUE:
                continue
            if key in _NAMED and isinstance(value, dict):
                for tier_value in value.values():
                    check_keys(file, tier_value)
                continue
            check_keys(file, value)
    elif isinstance(node, list):
        for item in node:
            if not isinstance(item, dict):
                raise RuleConfigError(
                    file,
                    "config error, yaml file contains list of type other than map: "
                    f"{_go_repr(item)}",
                )
            check_keys(file, item)
