"""The running process: start services, serve gRPC + admin, reload on SIGHUP, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiohttp import web
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidegate import debug, gc_tuning, startup_summary, workers
from sidegate import grpc_services as gs
from sidegate.admin import start_admin
from sidegate.extauthz.factory import build_authz_service
from sidegate.extauthz.service import AuthzService
from sidegate.grpc_guard import GuardedServer
from sidegate.health import component_report
from sidegate.metrics import READY
from sidegate.ratelimit.service import RateLimitService
from sidegate.reflection import enable_reflection
from sidegate.reloads import ConfigReloader
from sidegate.settings import SidegateConfig, TlsSettings
from sidegate.tls import TlsFileError, server_credentials
from sidegate.tracing_setup import TracingUnavailable, start_tracing, stop_tracing

log = structlog.get_logger("sidegate.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StartupError(Exception):
    """Something the process needs could not be prepared (bad policy, unbindable port)."""


@dataclass
class Sidegate:
    config: SidegateConfig
    authz: AuthzService | None = None
    ratelimit: RateLimitService | None = None
    tracker: gs.CallTracker = field(default_factory=gs.CallTracker)
    _services: list[str] = field(default_factory=list)
    # The servicers answering each kind of call ("authz", "ratelimit"): a live config reload
    # points them at a rebuilt service.
    servicers: dict[str, list[Any]] = field(default_factory=dict)

    draining: bool = False
    started: bool = False

    @property
    def ready(self) -> bool:
        """The process can answer calls (/readyz, overall gRPC health). A part that is down
        (Redis, an IdP) is reported per service and per component, not here."""
        return self.started and not self.draining

    def service_status(self) -> dict[str, bool]:
        """gRPC health per service name: "" is the process, each service its own state."""
        status = {"": self.ready}
        if self.authz is not None:
            status[gs.AUTHZ_SERVICE] = self.ready and self.authz.ready
        if self.ratelimit is not None:
            status[gs.RATELIMIT_SERVICE] = self.ready and self.ratelimit.ready
        return status

    def swap_service(self, kind: str, service: Any) -> None:
        """One reference per servicer: a call uses the old service or the new, never a mix."""
        setattr(self, kind, service)
        for servicer in self.servicers.get(kind, ()):
            servicer.service = service

    async def start_services(self) -> None:
        if self.config.authz.enabled:
            self.authz = build_authz_service(self.config.authz)
            await self.authz.start()
            self._services.append(gs.AUTHZ_SERVICE)
        if self.config.ratelimit.enabled:
            self.ratelimit = RateLimitService.from_settings(self.config.ratelimit)
            await self.ratelimit.start()
            self._services.append(gs.RATELIMIT_SERVICE)

    async def close_services(self) -> None:
        for service in (self.authz, self.ratelimit):
            if service is not None:
                await service.close()

    def register(self, kind: str, servicer: Any) -> Any:
        self.servicers.setdefault(kind, []).append(servicer)
        return servicer

    def debug_routes(self, admin: web.Application) -> None:
        """/debug/* on the admin port (loopback, or with a token: see sidegate/debug.py)."""
        server = self.config.server
        serve, token = debug.debug_token(server.admin_address, server.admin_token_env)
        if not serve:
            return
        states = {
            "config": lambda: debug.config_state(self.config),
            "ratelimit": lambda: debug.ratelimit_state(self.ratelimit),
            "policies": lambda: debug.policy_state(self.authz),
            "identity": lambda: debug.identity_state(self.authz),
        }
        debug.add_debug_routes(admin, states, token)
        debug.add_explain_route(admin, self, token)


def _server_options(config: SidegateConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", config.server.max_receive_message_bytes),
        # Workers (server.workers > 1) share the address; a lone process must not.
        ("grpc.so_reuseport", 1 if config.server.workers > 1 else 0),
    ]


class _AioServing:
    def __init__(self, app: Sidegate) -> None:
        cfg = app.config.server
        self.server = grpc.aio.server(options=_server_options(app.config))
        # Every handler is registered through the decode guard (sidegate/grpc_guard.py).
        guarded = GuardedServer(self.server)
        self.health = health.aio.HealthServicer()
        if app.authz is not None:
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
                app.register("authz", gs.AioAuthorization(app.authz, app.tracker)), guarded
            )
        if app.ratelimit is not None:
            rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
                app.register("ratelimit", gs.AioRateLimit(app.ratelimit, app.tracker)), guarded
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, guarded)
        _reflection(app, guarded)
        _bind(self.server, cfg.grpc_address, cfg.tls)

    async def start(self) -> None:
        await self.server.start()

    async def set_status(self, status: dict[str, bool]) -> None:
        for name, serving in status.items():
            await self.health.set(name, SERVING if serving else NOT_SERVING)

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)


class _ThreadServing:
    def __init__(self, app: Sidegate, loop: asyncio.AbstractEventLoop) -> None:
        cfg = app.config.server
        self.pool = futures.ThreadPoolExecutor(cfg.threads, thread_name_prefix="grpc")
        self.server = grpc.server(self.pool, options=_server_options(app.config))
        guarded = GuardedServer(self.server)
        self.health = health.HealthServicer()
        # The bridge's wait is bounded by the grace period: no worker thread waits forever.
        bridge = gs.LoopBridge(loop, timeout=cfg.grace_period_s)
        if app.authz is not None:
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
                app.register("authz", gs.ThreadedAuthorization(app.authz, bridge, app.tracker)),
                guarded,
            )
        if app.ratelimit is not None:
            rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
                app.register("ratelimit", gs.ThreadedRateLimit(app.ratelimit, bridge, app.tracker)),
                guarded,
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, guarded)
        _reflection(app, guarded)
        _bind(self.server, cfg.grpc_address, cfg.tls)

    async def start(self) -> None:
        self.server.start()

    async def set_status(self, status: dict[str, bool]) -> None:
        for name, serving in status.items():
            self.health.set(name, SERVING if serving else NOT_SERVING)

    async def stop(self, grace: float) -> None:
        event = self.server.stop(grace)
        await asyncio.get_running_loop().run_in_executor(None, event.wait)
        self.pool.shutdown(wait=False)


def _bind(server: Any, address: str, tls: TlsSettings | None = None) -> None:
    # A bad certificate file is a config error (TlsFileError), raised before binding.
    credentials = server_credentials(tls) if tls is not None else None
    # grpcio returns 0 on some versions and raises RuntimeError on others when a port is taken.
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise StartupError(f"cannot bind gRPC address {address} (in use, or not a local address)")


def _reflection(app: Sidegate, server: GuardedServer) -> None:
    if app.config.server.reflection:
        names = [*app._services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        enable_reflection(names, server)


async def serve(config: SidegateConfig, config_path: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop accepting, drain in-flight calls, return.

    SIGHUP re-reads ``config_path`` and every file it references (see sidegate.reloads).
    """
    source = str(config_path) if config_path is not None else "embedded default"
    loop = asyncio.get_running_loop()
    app = Sidegate(config)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader = ConfigReloader(app, config_path)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    try:
        tracer_provider = start_tracing(config.tracing)
    except TracingUnavailable as exc:
        raise StartupError(str(exc)) from None

    try:
        await app.start_services()
    except Exception:
        # A bad policy or rule file found while loading: release what did start (sessions,
        # watchers), then let the CLI report the error.
        with contextlib.suppress(Exception):
            await app.close_services()
        raise
    log.info("starting", **startup_summary.describe(config, source, app.authz, app.ratelimit))
    serving: _AioServing | _ThreadServing
    try:
        serving = _AioServing(app) if config.server.model == "aio" else _ThreadServing(app, loop)
    except (StartupError, TlsFileError):
        await app.close_services()
        raise
    await serving.start()
    app.started = True
    try:
        admin = (
            await start_admin(
                config.server.admin_address,
                lambda: app.ready,
                lambda: component_report(app),
                app.debug_routes,
            )
            if workers.serves_admin()
            else None
        )
    except OSError as exc:
        await serving.stop(0)
        await app.close_services()
        address = config.server.admin_address
        raise StartupError(f"cannot bind admin address {address}: {exc}") from exc
    await serving.set_status(app.service_status())
    READY.set(1 if app.ready else 0)
    # Long-lived start-up objects out of the cyclic GC's reach: no 50 ms gen-2 pauses.
    gc_tuning.tune_after_startup()
    log.info(
        "serving",
        grpc_address=config.server.grpc_address,
        admin_address=config.server.admin_address,
        model=config.server.model,
        services=app._services,
        ready=app.ready,
    )
    # Readiness can change later (a rule set or key set arriving): keep health in step.
    watcher = asyncio.create_task(_track_readiness(app, serving))
    await stop.wait()

    grace = config.server.grace_period_s
    log.info("draining", grace_period_s=grace, in_flight=app.tracker.in_flight)
    watcher.cancel()
    draining_since = loop.time()
    app.draining = True
    await reloader.close()
    await serving.set_status(app.service_status())
    READY.set(0)
    await _quiesce(app.tracker, config.server.drain_quiet_period_s, grace / 2)
    await serving.stop(max(grace - (loop.time() - draining_since), 0.5))
    if admin is not None:
        await admin.cleanup()
    await app.close_services()
    stop_tracing(tracer_provider)
    log.info("stopped")


async def _quiesce(tracker: gs.CallTracker, quiet_period: float, limit: float) -> None:
    """Keep serving until no call has started for ``quiet_period`` (at most ``limit`` seconds).

    gRPC's stop cancels calls that arrived but were not yet handed to a handler; Envoy sent
    those before it saw NOT_SERVING, so they are answered first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if tracker.in_flight == 0 and tracker.quiet_for() >= quiet_period:
            return
        await asyncio.sleep(0.02)


async def _track_readiness(
    app: Sidegate, serving: _AioServing | _ThreadServing, interval: float = 1.0
) -> None:
    """Keep gRPC health per service in step with its parts (Redis down: rate limit only)."""
    last = app.service_status()
    while True:
        await asyncio.sleep(interval)
        try:
            now = app.service_status()
            if now != last:
                await serving.set_status(now)
                READY.set(1 if app.ready else 0)
                changed = {n or "(process)": ok for n, ok in now.items() if last.get(n) != ok}
                log.info("health_changed", serving=changed)
                last = now
        except Exception as exc:  # health tracking must outlive any surprise in a part
            log.warning("health_check_failed", error=repr(exc)[:500])
