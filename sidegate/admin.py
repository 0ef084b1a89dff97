"""Plain-HTTP admin endpoints: Prometheus /metrics, liveness /healthz, readiness /readyz."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def build_admin_app(
    is_ready: Callable[[], bool], extend: Callable[[web.Application], None] | None = None
) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if extend is not None:
        extend(app)  # the debug endpoints (sidegate/debug.py)
    return app


async def start_admin(
    address: str,
    is_ready: Callable[[], bool],
    extend: Callable[[web.Application], None] | None = None,
) -> web.AppRunner:
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(build_admin_app(is_ready, extend), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner
