"""Debug endpoints on the admin port: what is loaded right now, and how it is doing.

``/debug/config`` (the effective config, secrets masked), ``/debug/ratelimit`` (domains, the
rule tree with tiers, per-rule counters: envoyproxy/ratelimit's ``/rlconfig`` and more),
``/debug/policies`` (modules, entrypoints, decision-cache state, bundle generation) and
``/debug/identity`` (sources, JWKS and key-store state, breakers). JSON, read-only, never a
credential.

The admin port listens on loopback by default. Bound anywhere else, these endpoints answer only
with ``Authorization: Bearer <token>``, the token taken from the environment variable
``server.admin_token_env`` names; with no token configured they are not served at all.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from sidegate.config_cli import mask_secrets
from sidegate.extauthz.identity.fetch import is_loopback_host
from sidegate.extauthz.identity.metrics import BREAKER_STATE
from sidegate.ratelimit.metrics import RULE_HITS

log = structlog.get_logger("sidegate.server")

State = Callable[[], dict[str, Any]]


def is_loopback(address: str) -> bool:
    """Whether the admin ``host:port`` listens on loopback only."""
    return is_loopback_host(address.rpartition(":")[0].strip("[]"))


def debug_token(address: str, token_env: str | None) -> tuple[bool, str | None]:
    """(serve the endpoints?, the bearer token they require, if any)."""
    token = os.environ.get(token_env, "") if token_env else ""
    if token:
        return True, token
    if is_loopback(address):
        return True, None
    log.warning(
        "debug_endpoints_disabled",
        admin_address=address,
        reason="the admin port is not on loopback and no server.admin_token_env token is set",
    )
    return False, None


def _authorized(request: web.Request, token: str | None) -> bool:
    """No token configured (loopback): anyone on the host; else ``Bearer <token>``, compared in
    constant time."""
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized"}, status=401)


def add_debug_routes(app: web.Application, states: dict[str, State], token: str | None) -> None:
    def handler(state: State) -> Callable[[web.Request], Any]:
        async def answer(request: web.Request) -> web.Response:
            if not _authorized(request, token):
                return _unauthorized()
            return web.json_response(state(), dumps=_dumps)

        return answer

    for name, state in states.items():
        app.router.add_get(f"/debug/{name}", handler(state))


def add_explain_route(app: web.Application, services: Any, token: str | None) -> None:
    """``POST /debug/explain``: sidegate explain against the running process's state (its
    in-memory buckets included); quota is peeked at, never taken."""
    from sidegate.explain import ExplainError, explain, request_from_json

    async def answer(request: web.Request) -> web.Response:
        if not _authorized(request, token):
            return _unauthorized()
        try:
            body = await request.json()
            check, descriptors, domain = request_from_json(body)
            report = await explain(services, check, descriptors, domain)
        except (ExplainError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(report, dumps=_dumps)

    app.router.add_post("/debug/explain", answer)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


# -- the states -----------------------------------------------------------------------------


def config_state(config: Any) -> dict[str, Any]:
    return mask_secrets(config.model_dump(mode="json"))


def ratelimit_state(service: Any) -> dict[str, Any]:
    if service is None:
        return {"enabled": False}
    rules = service.rules
    counters: dict[tuple[str, str], dict[str, float]] = {}
    for metric in RULE_HITS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["domain"], sample.labels["rule"])
                counters.setdefault(key, {})[sample.labels["kind"]] = sample.value
    domains = {}
    for name, domain in sorted(rules.domains.items()):
        domains[name] = {
            "files": list(domain.files),
            "descriptors": _level(domain.root, name, counters),
        }
    return {
        "enabled": True,
        "backend": service.settings.backend,
        "ready": service.ready,
        "files": list(rules.files),
        "rules": rules.rule_count,
        "domains": domains,
    }


def _level(level: Any, domain: str, counters: dict) -> list[dict[str, Any]]:
    out = []
    for node in level.nodes.values():
        entry: dict[str, Any] = {"key": node.key}
        if node.value:
            entry["value"] = node.value
        if node.rule is not None:
            entry["rate_limit"] = _rule(node.rule, domain, counters)
        children = _level(node.children, domain, counters)
        if children:
            entry["descriptors"] = children
        out.append(entry)
    return out


def _rule(rule: Any, domain: str, counters: dict) -> dict[str, Any]:
    described: dict[str, Any] = {"unlimited": rule.unlimited}
    if rule.name:
        described["name"] = rule.name
    if rule.limits:
        described["limits"] = [
            {
                "requests_per_unit": limit.requests_per_unit,
                "window_ms": limit.window_ms,
                "algorithm": limit.algorithm,
                "burst": limit.burst,
            }
            for limit in rule.limits
        ]
    for flag in ("shadow_mode", "quota_mode"):
        if getattr(rule, flag, False):
            described[flag] = True
    if rule.replaces:
        described["replaces"] = list(rule.replaces)
    stat_key = getattr(rule, "stat_key", "")
    if stat_key:
        described["stat_key"] = stat_key
        described["counters"] = counters.get((domain, stat_key), {})
    return described


def policy_state(service: Any) -> dict[str, Any]:
    if service is None:
        return {"enabled": False}
    engine = service.engine
    settings = service.settings.policy
    state: dict[str, Any] = {
        "enabled": True,
        "engine": settings.engine,
        "default_path": settings.default_path,
        "ready": engine.ready,
        "entrypoints": sorted(getattr(engine, "entrypoints", ())),
    }
    compiled = getattr(engine, "_compiled", None)
    if settings.engine == "remote":
        state["url"] = settings.remote.url
        return state
    state["directory"] = str(getattr(engine, "directory", ""))
    if compiled is not None:
        sources = compiled.sources
        state["generation"] = compiled.generation
        state["compiled_at"] = compiled.compiled_at
        state["age_s"] = round(time.time() - compiled.compiled_at, 3)
        state["modules"] = [
            {"file": str(m.path), "package": m.package} for m in sources.policy_modules
        ]
        state["interpreted_entrypoints"] = sorted(compiled.interpreted)
        state["input_pruned"] = compiled.input_paths is not None
        blockers = [
            {"where": f.where, "builtin": f.name, "why": f.why} for f in compiled.cache_blockers
        ]
    else:
        blockers = []
    cache = engine.decision_cache
    if not settings.decision_cache.enabled:
        why = "off in the config (authz.policy.decision_cache.enabled)"
    elif not settings.prune_input:
        why = "input pruning is off (authz.policy.prune_input)"
    elif blockers:
        why = "the policies are not deterministic"
    else:
        why = None
    state["decision_cache"] = {
        "on": cache is not None,
        "why_off": why,
        "blockers": blockers,
        "entries": len(cache) if cache is not None else 0,
        "max_entries": settings.decision_cache.max_entries,
        "ttl_s": settings.decision_cache.ttl_s,
    }
    return state


def identity_state(service: Any) -> dict[str, Any]:
    if service is None:
        return {"enabled": False}
    authenticator = service.authenticator
    pipeline_sources = getattr(authenticator, "sources", None)
    sources = []
    for source, verifier in pipeline_sources or ():
        entry: dict[str, Any] = {
            "name": source.name,
            "type": source.type,
            "verifier": type(verifier).__name__,
        }
        describe = getattr(verifier, "debug_state", None)
        if describe is not None:
            entry.update(describe())
        sources.append(entry)
    breakers = {}
    for metric in BREAKER_STATE.collect():
        for sample in metric.samples:
            breakers[sample.labels["endpoint"]] = {0: "closed", 1: "open", 2: "half_open"}.get(
                int(sample.value), str(sample.value)
            )
    return {
        "enabled": True,
        "configured": pipeline_sources is not None,
        "sources": sources,
        "breakers": breakers,
        "upstream_headers": dict(service.settings.identity.upstream_headers),
    }
