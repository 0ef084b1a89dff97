"""Rule files: envoyproxy/ratelimit's YAML domain format plus sidegate's tiers and extensions."""

from ratelimit.config.errors import RuleConfigError
from ratelimit.config.loader import load_rules, validate
from ratelimit.config.model import DescriptorNode, Domain, Limit, Rule, RuleSet

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
