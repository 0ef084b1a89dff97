"""Plain-HTTP admin endpoints: Prometheus /metrics, liveness /healthz, readiness /readyz.

``/readyz`` answers 200 while the process can answer calls (started, not draining) and 503
otherwise; its JSON body lists every component (policy bundle, rules, key stores, Redis, JWKS per
issuer) with its state and reason, so a part that is down is visible without failing the pod.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidegate.extauthz.check_failure import describe

log = structlog.get_logger("sidegate.admin")


class AdminServerLog:
    """aiohttp's server logger for the admin port: one line per problem, never a traceback.

    aiohttp answers a malformed request (bad request line, oversized header, broken chunking)
    with 400 itself, then logs the parser's exception with its traceback at ERROR: any port
    scanner would fill the log. Malformed requests are the client's problem (debug); anything
    else is named by type and place (error).
    """

    def _record(self, message: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        exc = kw.get("exc_info")
        if exc is True or exc is None:
            exc = sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            log.debug("admin_bad_request", status=exc.code, error=type(exc).__name__)
        elif isinstance(exc, BaseException):
            log.error("admin_error", error=type(exc).__name__, where=describe(exc))
        else:
            log.warning("admin_server", message=message % args if args else message)

    def debug(self, message: str, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), BaseException):
            self._record(message, args, kw)

    def exception(self, message: str, *args: Any, **kw: Any) -> None:
        self._record(message, args, kw)

    error = warning = exception


def build_admin_app(
    is_ready: Callable[[], bool],
    report: Callable[[], list[dict[str, Any]]] | None = None,
    extend: Callable[[web.Application], None] | None = None,
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
    if extend is not None:
        extend(app)  # the debug endpoints (sidegate/debug.py)
    return app


async def start_admin(
    address: str,
    is_ready: Callable[[], bool],
    report: Callable[[], list[dict[str, Any]]] | None = None,
    extend: Callable[[web.Application], None] | None = None,
) -> web.AppRunner:
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(
        build_admin_app(is_ready, report, extend), access_log=None, logger=AdminServerLog()
    )
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner
