"""A stand-in for an OPA server: OPA's REST Data API, evaluated by sidegate's embedded engine.

No OPA binary is available from the package registries on this machine, so the remote engine's
tests talk to this aiohttp app instead. It answers as OPA's Data API does:
``POST /v1/data/<path>`` with ``{"input": ...}`` -> ``200 {"result": ...}``, ``200 {}`` for an
undefined document, ``500 {"code": "internal_error", "message": ...}`` for an evaluation
error, ``400 {"code": "invalid_parameter"}`` for a body that is not JSON. ``delay`` makes every
answer slow (timeouts); ``fail_status`` makes every answer an error (outages).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError


class OpaStandIn:
    def __init__(self, directory: Path) -> None:
        # OPA keeps no decision cache: neither does its stand-in.
        self.engine = EmbeddedEngine(directory, cache_decisions=False)
        self.engine.load()
        self.delay = 0.0
        self.fail_status: int | None = None
        self.requests = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/data/{path:.*}", self._data)

    async def _data(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="unavailable")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return web.json_response(
                {"code": "invalid_parameter", "message": "body must be JSON"}, status=400
            )
        input_json = json.dumps(body.get("input"), separators=(",", ":"))
        try:
            result = self.engine.evaluate_json(request.match_info["path"], input_json)
        except PolicyError as exc:
            return web.json_response({"code": "internal_error", "message": exc.reason}, status=500)
        if result.value is UNDEFINED:
            return web.json_response({})
        return web.json_response({"result": result.value})
