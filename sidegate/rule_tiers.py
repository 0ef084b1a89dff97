"""The tier names the rate-limit rules of a sidegate config know: ``sidegate keys add`` and
``check-config`` warn about API keys whose tier no rule names.

Lives in the process package because it needs both halves: the keys CLI (``extauthz``) asks,
the rule loader (``ratelimit``) answers, and neither may import the other.
"""

from __future__ import annotations

from pathlib import Path

from sidegate.config import load_config
from sidegate.extauthz.identity.api_keys.digest import key_id
from sidegate.extauthz.identity.api_keys.file_store import parse_key_file
from sidegate.extauthz.identity.api_keys.settings import ApiKeySourceSettings, FileStoreSettings
from sidegate.ratelimit.config.loader import load_from_settings
from sidegate.ratelimit.config.model import Level
from sidegate.settings import SidegateConfig

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


def key_file_tier_warnings(config: SidegateConfig) -> list[str]:
    """For ``check-config``: API keys in key files whose tier no rate-limit rule names (such a
    key silently gets the default tier's quota). Redis stores are not read (no network)."""
    if not (config.authz.enabled and config.ratelimit.enabled):
        return []
    sources = [
        (index, source)
        for index, source in enumerate(config.authz.identity.sources)
        if isinstance(source, ApiKeySourceSettings) and isinstance(source.store, FileStoreSettings)
    ]
    if not sources:
        return []
    tiers: set[str] = set()
    for domain in load_from_settings(config.ratelimit).domains.values():
        _tier_values(domain.root, tiers)
    warnings = []
    for index, source in sources:
        path = source.store.path  # type: ignore[union-attr]
        unknown: dict[str, list[str]] = {}
        for record in parse_key_file(path).values():
            if record.tier not in tiers:
                unknown.setdefault(record.tier, []).append(key_id(record.digest))
        for tier, ids in sorted(unknown.items()):
            warnings.append(
                f"authz.identity.sources[{index}] ({source.name!r}): {path}: tier {tier!r} of "
                f"key_id {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''} appears in no "
                f"rate-limit rule; those keys get the default tier's quota"
            )
    return warnings
