"""SIGHUP: re-read sidegate.yaml and every file it references; swap what may change live.

What can change while serving (identity sources, anonymous rules, upstream headers, policy
settings, rate-limit settings and rules) is rebuilt off the loop and swapped in as a whole; what
needs a restart (listen addresses, server model, the rate-limit store) is named in a warning and
keeps running as it is. A bad config file, or any bad file the new config references, keeps
everything as it was. With the config unchanged, each part (policy bundle, key files, static JWT
keys, rule files) reloads through its own Reloader, a bad file keeping that part's old version.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sidegate.common.reloading import RELOADS, Reloader
from sidegate.config import ConfigError, load_config
from sidegate.extauthz.factory import build_authz_service
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.service import AuthzService
from sidegate.ratelimit.config.loader import load_from_settings
from sidegate.ratelimit.service import RateLimitService
from sidegate.settings import ServerSettings, SidegateConfig

if TYPE_CHECKING:
    from sidegate.app import Sidegate

log = structlog.get_logger("sidegate.reload")

# Rate-limit settings bound to the running store: a new store would lose every bucket.
RATELIMIT_RESTART_KEYS = ("enabled", "backend", "redis", "local_cache", "memory")
# Old services finish the calls they started before they are closed.
RETIRE_AFTER_S = 5.0


def restart_needed(old: SidegateConfig, new: SidegateConfig) -> list[str]:
    """Key paths whose new value takes effect only after a restart."""
    keys = [
        f"server.{name}"
        for name in ServerSettings.model_fields
        if getattr(old.server, name) != getattr(new.server, name)
    ]
    if old.authz.enabled != new.authz.enabled:
        keys.append("authz.enabled")
    for name in RATELIMIT_RESTART_KEYS:
        if getattr(old.ratelimit, name, None) != getattr(new.ratelimit, name, None):
            keys.append(f"ratelimit.{name}")
    return keys


def _live_ratelimit(config: SidegateConfig) -> dict[str, Any]:
    dumped = config.ratelimit.model_dump()
    for name in RATELIMIT_RESTART_KEYS:
        dumped.pop(name, None)
    return dumped


def identity_parts(authz: AuthzService) -> Iterator[tuple[str, Any]]:
    """(source name, verifier) of every identity source of ``authz``."""
    for source, verifier in getattr(authz.authenticator, "sources", ()):
        yield source.name, verifier


def _build_authz(settings: Any) -> AuthzService:
    """Worker thread: build the service and load everything it reads from disk."""
    service = build_authz_service(settings)  # key files, static keys: read and checked here
    if isinstance(service.engine, EmbeddedEngine):
        service.engine.load()  # compiled here, so start() on the loop only starts the watcher
    return service


class ConfigReloader:
    """Runs the SIGHUP reload of one Sidegate; signals during a reload coalesce into one more."""

    def __init__(self, app: Sidegate, config_path: Path | None) -> None:
        self.app = app
        self.config_path = config_path
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._retiring: set[asyncio.Task[None]] = set()

    def request(self, trigger: str = "sighup") -> None:
        """The signal handler: schedules, never raises, never blocks."""
        try:
            if self._task is not None and not self._task.done():
                self._again = True
                return
            self._task = asyncio.get_running_loop().create_task(self._run(trigger))
        except Exception:  # a signal handler must not raise into the loop
            log.exception("reload_schedule_failed")

    async def wait(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for retiring in list(self._retiring):
            retiring.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _run(self, trigger: str) -> None:
        while True:
            self._again = False
            try:
                await self.reload(trigger)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never out of the reload task; the old state stays
                RELOADS.labels("process", trigger, "failure").inc()
                log.warning("reload_failed", component="process", error=f"{exc!r}"[:2000])
            if not self._again:
                return

    async def reload(self, trigger: str = "sighup") -> dict[str, bool]:
        app = self.app
        if not app.started:
            return {}
        new_config = app.config
        if self.config_path is not None:
            try:
                new_config = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                RELOADS.labels("config", trigger, "failure").inc()
                log.warning(
                    "reload_failed",
                    component="config",
                    file=str(self.config_path),
                    error=str(exc),
                    kept="previous configuration and every file",
                )
                return {"config": False}
        restart = restart_needed(app.config, new_config)
        if restart:
            log.warning(
                "config_change_needs_restart",
                file=str(self.config_path),
                keys=restart,
                note="these keys keep their running values until sidegate restarts",
            )
        authz_changed = app.authz is not None and (
            new_config.authz.model_dump(exclude={"enabled"})
            != app.config.authz.model_dump(exclude={"enabled"})
        )
        ratelimit_changed = app.ratelimit is not None and (
            _live_ratelimit(new_config) != _live_ratelimit(app.config)
        )
        if authz_changed or ratelimit_changed:
            ok = await self._swap_services(new_config, authz_changed, ratelimit_changed, trigger)
            if not ok:
                return {"config": False}
        else:
            app.config = _keep_restart_values(app.config, new_config)
        results: dict[str, bool] = {}
        if self.config_path is not None:
            RELOADS.labels("config", trigger, "success").inc()
            results["config"] = True
        # Parts a swap just rebuilt were read fresh; the others re-read their files now.
        if app.authz is not None and not authz_changed:
            results.update(await reload_authz_parts(app.authz, trigger))
        if app.ratelimit is not None and not ratelimit_changed:
            results["ratelimit_rules"] = await app.ratelimit.reload_async(trigger)
        log.info("reloaded", trigger=trigger, results=results)
        return results

    async def _swap_services(
        self, new_config: SidegateConfig, authz: bool, ratelimit: bool, trigger: str
    ) -> bool:
        """Prepare every changed service off the loop; swap all of them or none."""
        app = self.app
        new_authz: AuthzService | None = None
        new_ratelimit: RateLimitService | None = None
        try:
            if authz:
                new_authz = await asyncio.to_thread(_build_authz, new_config.authz)
            if ratelimit and app.ratelimit is not None:
                settings = new_config.ratelimit.model_copy(
                    update={k: getattr(app.config.ratelimit, k) for k in RATELIMIT_RESTART_KEYS
                            if k in type(app.config.ratelimit).model_fields}
                )
                rules = await asyncio.to_thread(load_from_settings, settings)
                old = app.ratelimit
                # The running store (and its buckets) carries over; only settings and rules change.
                new_ratelimit = RateLimitService(
                    settings, rules, old.backend, over_limit_cache=old.over_limit_cache
                )
            if new_authz is not None:
                await new_authz.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if new_authz is not None:
                with contextlib.suppress(Exception):
                    await new_authz.close()
            RELOADS.labels("config", trigger, "failure").inc()
            log.warning(
                "reload_failed",
                component="config",
                file=str(self.config_path),
                error=(str(exc) or repr(exc))[:2000],
                kept="previous configuration and every file",
            )
            return False
        retired: list[Any] = []
        if new_authz is not None and app.authz is not None:
            retired.append(app.authz)
            app.swap_service("authz", new_authz)
        if new_ratelimit is not None and app.ratelimit is not None:
            old_ratelimit = app.ratelimit
            if old_ratelimit.watcher is not None:
                await old_ratelimit.watcher.stop()
            app.swap_service("ratelimit", new_ratelimit)
            new_ratelimit.start_watching()
        app.config = _keep_restart_values(app.config, new_config)
        log.info("services_swapped", authz=new_authz is not None, ratelimit=ratelimit)
        for service in retired:
            task = asyncio.get_running_loop().create_task(_retire(service))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return True


def _keep_restart_values(old: SidegateConfig, new: SidegateConfig) -> SidegateConfig:
    """The config now in force: new live values, the running ones for restart-only keys."""
    ratelimit = new.ratelimit.model_copy(
        update={k: getattr(old.ratelimit, k) for k in RATELIMIT_RESTART_KEYS
                if k in type(old.ratelimit).model_fields}
    )
    authz = new.authz.model_copy(update={"enabled": old.authz.enabled})
    return new.model_copy(update={"server": old.server, "authz": authz, "ratelimit": ratelimit})


async def _retire(service: Any) -> None:
    await asyncio.sleep(RETIRE_AFTER_S)
    try:
        await service.close()
    except Exception as exc:
        log.warning("retired_service_close_failed", error=repr(exc)[:500])


async def reload_authz_parts(authz: AuthzService, trigger: str) -> dict[str, bool]:
    """Policy bundle, API-key files, static JWT keys: each off the loop, each on its own."""
    results: dict[str, bool] = {}
    engine_reload = getattr(authz.engine, "reload_async", None)
    if engine_reload is not None:
        results["policy"] = await engine_reload(trigger)
    for name, verifier in identity_parts(authz):
        store = getattr(verifier, "store", None)
        store_reload = getattr(store, "reload_async", None)
        if store_reload is not None:
            results[f"api_key_file:{name}"] = await store_reload(trigger)
        sync_reload = getattr(verifier, "reload", None)
        if sync_reload is not None:
            # JWT static keys (PEM files, secrets): read in a worker thread like everything else.
            reloader: Reloader[bool] = Reloader("jwt_keys", name, sync_reload)
            results[f"jwt_keys:{name}"] = await reloader.run(trigger)
    return results
