"""The strict key whitelist of rule files, checked on the YAML node tree before parsing.

envoyproxy/ratelimit accepts its own keys at any depth (its whitelist is flat); sidegate does
the same for them, so upstream files load unchanged. sidegate's extension keys are accepted
only where they mean something, and anywhere else they are upstream's "unknown key" error,
with the line: a misplaced ``burst`` or ``tiers`` never loads silently.

- the top level and any descriptor: ``tiers``
- a ``rate_limit`` (or a tier's quota): ``limits``, ``window``, ``burst``, ``algorithm``
- an item of ``limits``: ``window``, ``burst``, ``algorithm``
- a ``tiers`` block: ``tier_key``, ``consumer_key``, ``default``, ``quotas``
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

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

# Where a map sits -> the extension keys it may hold.
_TOP, _DESCRIPTOR, _RATE_LIMIT, _LIMIT, _TIERS, _PLAIN = (
    "top", "descriptor", "rate_limit", "limit", "tiers", "plain"
)
_EXTENSIONS_AT: dict[str, frozenset[str]] = {
    _TOP: frozenset({"tiers"}),
    _DESCRIPTOR: frozenset({"tiers"}),
    _RATE_LIMIT: frozenset({"limits", "window", "burst", "algorithm"}),
    _LIMIT: frozenset({"window", "burst", "algorithm"}),
    _TIERS: frozenset({"tier_key", "consumer_key", "default", "quotas"}),
    _PLAIN: frozenset(),
}
# A key's value -> where its maps sit. ``metadata`` is opaque; ``quotas`` maps tier names
# (user data) to rate limits.
_CHILD = {
    "descriptors": _DESCRIPTOR,
    "rate_limit": _RATE_LIMIT,
    "limits": _LIMIT,
    "tiers": _TIERS,
}
_OPAQUE = "metadata"
_NAMED = "quotas"

_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(slots=True)
class KeyReport:
    """What the walk saw: whether the file uses any sidegate extension."""

    uses_extensions: bool = False
    _seen: set[tuple[int, str]] = field(default_factory=set)


def _go_repr(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalar_value(node: yaml.Node) -> object:
    # A throw-away constructor gives the Python value of a scalar key (0.25, true, ...).
    return yaml.SafeLoader("").construct_object(node, deep=True)


def check_keys(file: str, root: yaml.Node | None) -> KeyReport:
    """Every map key is a string allowed where it stands; lists hold only maps."""
    report = KeyReport()
    if root is not None:
        _walk(file, root, _TOP, report)
    return report


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _walk(file: str, node: yaml.Node, where: str, report: KeyReport) -> None:
    # Aliases share nodes: visit each (node, position) once, so the walk stays linear.
    seen = (id(node), where)
    if seen in report._seen:
        return
    report._seen.add(seen)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                shown = (
                    _go_repr(_scalar_value(key_node))
                    if isinstance(key_node, yaml.ScalarNode)
                    else type(_scalar_value(key_node)).__name__
                )
                raise RuleConfigError(
                    file, f"config error, key is not of type string: {shown}", _line(key_node)
                )
            key = key_node.value
            if key in EXTENSION_KEYS:
                if key not in _EXTENSIONS_AT[where]:
                    raise RuleConfigError(
                        file, f"config error, unknown key '{key}'", _line(key_node)
                    )
                report.uses_extensions = True
            elif key not in UPSTREAM_KEYS:
                raise RuleConfigError(file, f"config error, unknown key '{key}'", _line(key_node))
            if key == _OPAQUE:
                continue
            if key == _NAMED and isinstance(value_node, yaml.MappingNode):
                for _, quota in value_node.value:
                    _walk(file, quota, _RATE_LIMIT, report)
                continue
            _walk(file, value_node, _CHILD.get(key, _PLAIN), report)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if not isinstance(item, yaml.MappingNode):
                raise RuleConfigError(
                    file,
                    "config error, yaml file contains list of type other than map: "
                    f"{_go_repr(_scalar_value(item))}",
                    _line(item),
                )
            _walk(file, item, where, report)
