"""Rule files: envoyproxy/ratelimit's YAML domain format plus sidegate's tiers and extensions."""

from sidegate.ratelimit.config.errors import RuleConfigError
from sidegate.ratelimit.config.loader import load_rules, validate
from sidegate.ratelimit.config.model import DescriptorNode, Domain, Limit, Rule, RuleSet

__all__ = [
    "DescriptorNode",
    "Domain",
    "Limit",
    "Rule",
    "RuleConfigError",
    "RuleSet",
    "load_rules",
    "validate",
]
