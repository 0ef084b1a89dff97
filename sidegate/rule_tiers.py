"""The tier names the rate-limit rules of a sidegate config know, for ``sidegate keys add``.

Lives in the process package because it needs both halves: the keys CLI (``extauthz``) asks,
the rule loader (``ratelimit``) answers, and neither may import the other.
"""

from __future__ import annotations

from pathlib import Path

from sidegate.config import load_config
from sidegate.ratelimit.config.loader import load_from_settings
from sidegate.ratelimit.config.model import Level

# the descriptor key Envoy's metadata action fills with the ext_authz ``tier``
TIER_KEY = "tier"


def _tier_values(level: Level, out: set[str]) -> None:
    for node in level.nodes.values():
        if node.key == TIER_KEY and node.value:
            out.add(node.value)
        _tier_values(node.children, out)


def configured_tiers(config_path: Path | None) -> set[str] | None:
    """Values of ``tier`` descriptor nodes at any depth of any domain (``tiers:`` blocks
    compile to such nodes); None when the config has rate limiting switched off."""
    config = load_config(config_path)
    if not config.ratelimit.enabled:
        return None
    tiers: set[str] = set()
    for domain in load_from_settings(config.ratelimit).domains.values():
        _tier_values(domain.root, tiers)
    return tiers
