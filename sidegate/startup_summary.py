"""The one start-up log line: what this process serves and where it came from.

An operator reading the first lines of a pod's log should see which config file (or the
embedded default), which version, which policies, rule domains and identity sources are live.
"""

from __future__ import annotations

from typing import Any

from sidegate import __version__
from sidegate.event_loop import running_loop_name
from sidegate.extauthz.service import AuthzService
from sidegate.ratelimit.service import RateLimitService
from sidegate.settings import SidegateConfig


def _policy(authz: AuthzService) -> dict[str, Any]:
    settings = authz.settings.policy
    out: dict[str, Any] = {"policy_engine": settings.engine}
    if settings.engine == "remote":
        out["policy_url"] = authz.engine.base_url  # type: ignore[attr-defined]
        return out
    out["policy_directory"] = str(settings.directory)
    compiled = getattr(authz.engine, "_compiled", None)
    if compiled is not None:
        out["policy_modules"] = len(compiled.sources.policy_modules)
    return out


def _identity(authz: AuthzService) -> list[dict[str, Any]]:
    sources = []
    for source, verifier in getattr(authz.authenticator, "sources", ()):
        entry: dict[str, Any] = {"name": source.name, "type": source.type}
        # Only a file store knows its key count without a network call.
        size = getattr(getattr(verifier, "store", None), "size", None)
        if isinstance(size, int):
            entry["keys"] = size
        issuers = getattr(source, "issuers", None)
        if issuers is not None:
            entry["issuers"] = len(issuers)
        sources.append(entry)
    return sources


def describe(config: SidegateConfig, source: str, authz: AuthzService | None,
             ratelimit: RateLimitService | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": source,
        "version": __version__,
        "event_loop": running_loop_name(),
    }
    if authz is not None:
        out.update(_policy(authz))
        out["identity_sources"] = _identity(authz)
    if ratelimit is not None:
        out["ratelimit_backend"] = config.ratelimit.backend
        out["rule_domains"] = sorted(ratelimit.rules.domains)
    return out
