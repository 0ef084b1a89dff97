"""What /readyz reports: each component of the running services with its state and reason.

States: ``ok``; ``degraded`` (serving, but something is off: a rejected reload keeps the old
version, stale JWKS keys serve while the IdP fails, a watcher stopped); ``down`` (the part cannot
do its job: Redis unreachable, no keys for an issuer). Reasons never hold secrets: file paths,
counts and error texts that name files and lines only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidegate.common.reloading import FAILURE, Reloader

if TYPE_CHECKING:
    from sidegate.app import Sidegate

OK = "ok"
DEGRADED = "degraded"
DOWN = "down"


def _component(name: str, state: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "reason": reason, **extra}


def _files(
    name: str, loaded: bool, summary: str, reloader: Reloader[Any] | None, watcher: Any
) -> dict[str, Any]:
    """A component loaded from files: its last reload and whether its watcher still runs."""
    extra: dict[str, Any] = {}
    state, reason = (OK, summary) if loaded else (DOWN, "not loaded")
    if reloader is not None:
        extra["last_reload"] = reloader.state.last_result
        if reloader.state.last_result == FAILURE:
            state = DEGRADED if loaded else DOWN
            reason = f"last reload rejected, previous version serving: {reloader.state.last_error}"
    if watcher is not None:
        extra["watcher"] = "running" if watcher.alive else "stopped"
        if not watcher.alive and state == OK:
            state, reason = DEGRADED, f"{summary}; file watcher stopped"
    return _component(name, state, reason, **extra)


def _policy(engine: Any) -> dict[str, Any]:
    compiled = getattr(engine, "_compiled", None)
    if compiled is None and getattr(engine, "name", "") != "embedded":
        kind = getattr(engine, "name", "remote")
        return _component("policy", OK, f"{kind} engine, checked per call")
    modules = len(compiled.sources.policy_modules) if compiled is not None else 0
    directory = getattr(engine, "directory", "")
    return _files(
        "policy",
        bool(getattr(engine, "ready", False)),
        f"{modules} module(s) from {directory}",
        getattr(engine, "reloader", None),
        getattr(engine, "watcher", None),
    )


def _identity(authz: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for source, verifier in getattr(authz.authenticator, "sources", ()):
        store = getattr(verifier, "store", None)
        if store is not None:
            kind = getattr(store, "kind", type(store).__name__)
            name = f"key_store:{source.name}"
            if kind == "file":
                out.append(
                    _files(
                        name,
                        True,
                        f"{store.size} key(s) from {store.path}",
                        getattr(store, "reloader", None),
                        getattr(store, "watcher", None),
                    )
                )
            else:
                out.append(_component(name, OK, f"{kind} store, checked per call"))
        for issuer_name, issuer in getattr(verifier, "issuers", {}).items():
            keys = issuer.keys
            name = f"jwks:{issuer_name}"
            if not hasattr(keys, "loaded"):
                out.append(_component(name, OK, "static keys"))
            elif not keys.loaded:
                failed = getattr(keys, "_last_failed", False)
                out.append(
                    _component(name, DOWN, "last fetch failed" if failed else "not fetched yet")
                )
            elif getattr(keys, "_last_failed", False):
                out.append(_component(name, DEGRADED, "last fetch failed, cached keys serving"))
            else:
                out.append(_component(name, OK, f"{len(keys.kids)} key(s)"))
    return out


def _ratelimit(service: Any) -> list[dict[str, Any]]:
    rules = service.rules
    out = [
        _files(
            "ratelimit_rules",
            True,
            f"{rules.rule_count} rule(s) in {len(rules.files)} file(s)",
            getattr(service, "reloader", None),
            getattr(service, "watcher", None),
        )
    ]
    backend = service.backend
    if hasattr(backend, "up"):
        if backend.up:
            out.append(_component("redis", OK, "answering"))
        else:
            mode = service.settings.failure_mode
            out.append(
                _component(
                    "redis",
                    DOWN,
                    f"unreachable or failing; calls follow failure_mode {mode!r}",
                    failure_mode=mode,
                )
            )
    else:
        out.append(_component("buckets", OK, f"{getattr(backend, 'name', 'memory')} backend"))
    return out


def component_report(app: Sidegate) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if app.authz is not None:
        out.append(_policy(app.authz.engine))
        out.extend(_identity(app.authz))
    if app.ratelimit is not None:
        out.extend(_ratelimit(app.ratelimit))
    return out
