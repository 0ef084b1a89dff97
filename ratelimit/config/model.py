"""The loaded rule set: domains, descriptor trees, rules and their limits (immutable once built)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sidegate.ratelimit.wildcard import WildcardPattern

Algorithm = Literal["token_bucket", "fixed_window"]
# "auto": fixed_window for files in upstream's format, token_bucket for files using extensions.
DefaultAlgorithm = Literal["auto", "token_bucket", "fixed_window"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One quota: ``requests_per_unit`` per ``window_ms``.

    ``burst`` is the token bucket's capacity (defaults to requests_per_unit); fixed windows
    ignore it. ``unit`` is the proto enum value reported in ``current_limit`` (UNKNOWN when the
    window is not a whole unit).
    """

    requests_per_unit: int
    window_ms: int
    unit: int
    algorithm: Algorithm
    burst: int
    name: str = ""

    @property
    def identity(self) -> str:
        """What a counter is keyed by: numbers may change on reload, the counter survives."""
        return f"{'tb' if self.algorithm == 'token_bucket' else 'fw'}{self.window_ms}"


@dataclass(frozen=True, slots=True)
class Rule:
    """The ``rate_limit`` of a descriptor node (or of a tier)."""

    limits: tuple[Limit, ...]
    unlimited: bool = False
    name: str = ""
    replaces: tuple[str, ...] = ()
    shadow_mode: bool = False
    quota_mode: bool = False
    # Config path with patterns, e.g. "sidegate.tier_free.consumer": metric label and key root.
    stat_key: str = ""
    metadata: dict[str, Any] | None = None

    @property
    def requests_per_unit(self) -> int:
        return self.limits[0].requests_per_unit if self.limits else 0


@dataclass(slots=True)
class Level:
    """The children of one node: exact ``key_value`` / key-only ``key`` entries, then wildcards."""

    nodes: dict[str, DescriptorNode] = field(default_factory=dict)
    wildcards: list[DescriptorNode] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.nodes) or bool(self.wildcards)


@dataclass(slots=True)
class DescriptorNode:
    key: str
    value: str  # "" for a key-only node
    rule: Rule | None
    children: Level
    pattern: WildcardPattern | None = None  # set when value contains "*"
    share_threshold: bool = False
    detailed_metric: bool = False
    value_to_metric: bool = False
    metadata: dict[str, Any] | None = None

    @property
    def composite(self) -> str:
        return f"{self.key}_{self.value}" if self.value else self.key


@dataclass(slots=True)
class Domain:
    name: str
    root: Level
    files: list[str] = field(default_factory=list)
    # The algorithm of rules naming none, as resolved for this domain's files (limit overrides
    # sent by Envoy use it too).
    default_algorithm: Algorithm = "token_bucket"


@dataclass(slots=True)
class RuleSet:
    domains: dict[str, Domain]
    files: tuple[str, ...] = ()

    @property
    def rule_count(self) -> int:
        def count(level: Level) -> int:
            # Wildcard nodes sit in ``nodes`` too (``wildcards`` only orders them).
            return sum(
                (node.rule is not None) + count(node.children) for node in level.nodes.values()
            )

        return sum(count(domain.root) for domain in self.domains.values())
