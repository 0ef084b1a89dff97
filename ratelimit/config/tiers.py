"""Tiers: named quota sets compiled into the same descriptor tree Envoy's descriptors walk.

A ``tiers`` block at the top of a domain file, or under any descriptor (tiers behind a prefix
such as ``generic_key: api``)::

    tiers:
      tier_key: tier            # descriptor entry carrying the tier (sidegate metadata `tier`)
      consumer_key: consumer    # next entry, one bucket per consumer ("" = one bucket per tier)
      default: standard         # unknown tier names get this tier's quotas, never no limit
      quotas:
        free: {requests_per_unit: 5, unit: minute}
        standard:
          limits:
            - {requests_per_unit: 10, unit: second, burst: 20}
            - {requests_per_unit: 10000, unit: day}
        enterprise: {unlimited: true}

becomes ``tier=<name> -> consumer`` nodes plus a key-only ``tier -> consumer`` node holding the
default tier's quotas, at the level where the block sits, so plain envoyproxy/ratelimit matching
applies and an explicit ``descriptors`` entry for the same key is a duplicate-key error.
"""

from __future__ import annotations

from typing import Any

from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.limits import parse_rule
from sidegate.ratelimit.config.model import Algorithm, DescriptorNode, Level


def _node(key: str, value: str, rule: Any, children: Level) -> DescriptorNode:
    return DescriptorNode(key=key, value=value, rule=rule, children=children)


def compile_tiers(
    file: str, parent: str, raw: Any, default_algorithm: Algorithm
) -> list[DescriptorNode]:
    """Descriptor nodes for one level, in order: one per tier, then the default.

    ``parent`` is the stat path of that level with a trailing dot: ``"<domain>."`` at the top,
    ``"<domain>.generic_key_api."`` for tiers behind a ``generic_key: api`` descriptor.
    """
    if not isinstance(raw, dict):
        raise RuleConfigError(file, "tiers must be a map")
    tier_key = raw.get("tier_key", "tier")
    consumer_key = raw.get("consumer_key", "consumer")
    quotas = raw.get("quotas")
    default = raw.get("default")
    if not isinstance(tier_key, str) or not tier_key:
        raise RuleConfigError(file, "tiers: tier_key must be a non-empty string")
    if not isinstance(consumer_key, str):
        raise RuleConfigError(file, "tiers: consumer_key must be a string")
    if not isinstance(quotas, dict) or not quotas:
        raise RuleConfigError(file, "tiers: quotas must map tier names to rate limits")
    if not isinstance(default, str) or default not in quotas:
        raise RuleConfigError(
            file, f"tiers: default must name one of the tiers ({', '.join(map(str, quotas))})"
        )
    nodes = []
    for name, quota in quotas.items():
        nodes.append(
            _tier_node(file, parent, tier_key, str(name), consumer_key, quota, default_algorithm)
        )
    nodes.append(
        _tier_node(
            file,
            parent,
            tier_key,
            "",
            consumer_key,
            quotas[default],
            default_algorithm,
            stat_tier=default,
        )
    )
    return nodes


def _tier_node(
    file: str,
    parent: str,
    tier_key: str,
    tier: str,
    consumer_key: str,
    quota: Any,
    default_algorithm: Algorithm,
    stat_tier: str | None = None,
) -> DescriptorNode:
    # Unknown tiers are counted under the default tier's name so metric series stay bounded.
    tier_stat = f"{parent}{tier_key}_{stat_tier or tier}"
    stat_key = f"{tier_stat}.{consumer_key}" if consumer_key else tier_stat
    rule = parse_rule(file, quota, default_algorithm=default_algorithm, stat_key=stat_key)
    if not consumer_key:
        return _node(tier_key, tier, rule, Level())
    consumer = _node(consumer_key, "", rule, Level())
    return _node(tier_key, tier, None, Level(nodes={consumer_key: consumer}))
