"""Plain-HTTP admin endpoints: Prometheus /metrics, liveness /healthz, readiness /readyz.

``/readyz`` answers 200 while the process can answer calls (started, not draining) and 503
otherwise; its JSON body lists every component (policy bundle, rules, key stores, Redis, JWKS per
issuer) with its state and reason, so a part that is down is visible without failing the pod.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def build_admin_app(
    is_ready: Callable[[], bool], report: Callable[[], list[dict[str, Any]]] | None = None
) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ready = is_ready()
        try:
            components = report() if report is not None else []
        except Exception as exc:  # a broken report must not turn into a 500 with a traceback
            components = [{"name": "report", "state": "error", "reason": type(exc).__name__}]
        body = {"ready": ready, "components": components}
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps(body, indent=2, default=str) + "\n",
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_admin(
    address: str,
    is_ready: Callable[[], bool],
    report: Callable[[], list[dict[str, Any]]] | None = None,
) -> web.AppRunner:
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(build_admin_app(is_ready, report), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner
