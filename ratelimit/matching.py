"""Descriptor → rule, walking a domain's tree exactly as envoyproxy/ratelimit does.

Per entry: the exact ``key_value`` node, else the first wildcard node (load order), else the
key-only node. The walk never backtracks, and a rule applies only when the node matched at the
descriptor's last entry has one (a deeper or shallower descriptor gets no limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidegate.ratelimit.buckets.base import BucketRequest
from sidegate.ratelimit.config.model import Algorithm, DescriptorNode, Domain, Limit, Rule
from sidegate.ratelimit.config.units import ENUM_SECONDS

if TYPE_CHECKING:
    from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor


@dataclass(slots=True)
class Match:
    rule: Rule
    # Metric label: the config path (patterns, key-only keys), with request values only where
    # the rule opted in through detailed_metric / value_to_metric.
    stat_key: str
    detailed: bool
    # What the counter is keyed by: request values, except patterns under share_threshold.
    counter_path: str
    metadata: dict[str, Any] | None
    # The service's bucket templates for this match, filled on first use (keys are hashed once).
    buckets: tuple[BucketRequest, ...] | None = None


def _step(
    level_nodes: dict[str, DescriptorNode], wildcards: list[DescriptorNode], key: str, value: str
) -> DescriptorNode | None:
    composite = f"{key}_{value}"
    node = level_nodes.get(composite)
    if node is not None and node.pattern is None:
        return node
    for candidate in wildcards:
        if candidate.pattern is not None and candidate.pattern.fullmatch(composite):
            return candidate
    return level_nodes.get(key)


def find_rule(domain: Domain, entries: Sequence[tuple[str, str]]) -> Match | None:
    if not entries:
        return None
    level = domain.root
    path: list[tuple[DescriptorNode, str, str]] = []
    last = len(entries) - 1
    for index, (key, value) in enumerate(entries):
        node = _step(level.nodes, level.wildcards, key, value)
        if node is None:
            return None
        path.append((node, key, value))
        if index == last:
            if node.rule is None:
                return None
            return _match(domain.name, node.rule, path)
        if not node.children:
            return None
        level = node.children
    return None


def _match(domain: str, rule: Rule, path: list[tuple[DescriptorNode, str, str]]) -> Match:
    detailed = any(node.detailed_metric for node, _, _ in path)
    stat_parts = []
    counter_parts = []
    for node, key, value in path:
        actual = f"{key}_{value}" if value else key
        if detailed or node.value_to_metric:
            stat_parts.append(actual)
        else:
            stat_parts.append(node.composite)
        # Separators that cannot collide with "_" inside keys or values; shared patterns are marked.
        counter_parts.append(f"*{node.composite}" if node.share_threshold else f"{key}\x1e{value}")
    detailed = detailed or any(node.value_to_metric for node, _, _ in path)
    metadata = path[-1][0].metadata
    return Match(
        rule=rule,
        stat_key=".".join([domain, *stat_parts]) if detailed else rule.stat_key,
        detailed=detailed,
        counter_path="\x1f".join(counter_parts),
        metadata=metadata,
    )


def override_match(
    domain: str,
    entries: Sequence[tuple[str, str]],
    override: RateLimitDescriptor.RateLimitOverride,
    algorithm: Algorithm,
) -> Match | None:
    """The limit Envoy sent with the descriptor replaces the tree (the domain must exist)."""
    seconds = ENUM_SECONDS.get(override.unit)
    if seconds is None:
        return None
    requests = override.requests_per_unit
    limit = Limit(
        requests_per_unit=requests,
        window_ms=seconds * 1000,
        unit=override.unit,
        algorithm=algorithm,
        burst=requests,
    )
    # One rolled-up series for all overrides of a domain (their values are unbounded).
    stat_key = f"{domain}.override"
    return Match(
        rule=Rule(limits=(limit,), stat_key=stat_key),
        stat_key=stat_key,
        detailed=False,
        counter_path="\x1f".join(f"{k}\x1e{v}" for k, v in entries),
        metadata=None,
    )
