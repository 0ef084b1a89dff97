"""Decisions from a running OPA over its REST Data API (``POST /v1/data/<path>``).

One pooled aiohttp session per engine. Failures are told apart: an OPA that answers with an
evaluation error (conflicting rules, builtin error) is an *evaluation* error; a refused
connection, a timeout or an HTTP 5xx that is not an evaluation error is an *outage*
(``PolicyError(outage=True)``), which the service answers as a dependency failure (503).
Every request waits at most the engine's timeout cut to the gRPC call's remaining time
(``common.deadline``); running out of either is a ``timeout`` outage.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import structlog

from sidegate.common import deadline
from sidegate.extauthz.policy.engine import UNDEFINED, EvalResult, PolicyError

log = structlog.get_logger("sidegate.policy")

ENGINE_NAME = "remote"


class RemoteOpaEngine:
    def __init__(self, url: str, *, timeout: float = 0.15, max_connections: int = 32) -> None:
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    name = ENGINE_NAME

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                json_serialize=lambda obj: json.dumps(obj, separators=(",", ":")),
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def reload(self) -> bool:
        """Nothing local to reload: OPA owns its bundles."""
        return True

    @property
    def input_needs(self) -> None:
        """Always the whole input: OPA may hold policies sidegate never sees."""
        return None

    def _url(self, path: str) -> str:
        return f"{self.base_url}/v1/data/{path.strip('/')}"

    def _outage(self, kind: str, reason: str) -> PolicyError:
        return PolicyError(reason, outage=True, kind=kind)

    async def _post(
        self, session: aiohttp.ClientSession, path: str, input_doc: dict[str, Any]
    ) -> tuple[int, bytes]:
        async with session.post(self._url(path), json={"input": input_doc}) as response:
            return response.status, await response.read()

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> EvalResult:
        session = self._session
        if session is None:
            raise PolicyError("remote OPA engine not started", outage=True)
        started = time.perf_counter()
        try:
            # Never wait past the gRPC call's deadline: Envoy would already have answered.
            budget = deadline.bound(self.timeout)
        except deadline.DeadlineExceeded as exc:
            raise self._outage("timeout", "no time left before the call's deadline") from exc
        try:
            status, payload = await asyncio.wait_for(self._post(session, path, input_doc), budget)
        except TimeoutError as exc:
            raise self._outage("timeout", f"OPA did not answer within {budget:.3f}s") from exc
        except aiohttp.ClientError as exc:
            raise self._outage("unavailable", f"OPA unreachable: {type(exc).__name__}") from exc
        elapsed = time.perf_counter() - started
        try:
            body = json.loads(payload) if payload else {}
        except ValueError as exc:
            raise self._outage("unavailable", f"OPA answered {status} with non-JSON") from exc
        if status == 200:
            if not isinstance(body, dict):
                raise self._outage("unavailable", "OPA answered 200 with a non-object")
            # OPA leaves "result" out when the document is undefined.
            return EvalResult(body.get("result", UNDEFINED), elapsed)
        code = body.get("code") if isinstance(body, dict) else None
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        if status == 500 and code == "internal_error":
            # OPA's answer to an evaluation error (conflicting rules, builtin error).
            raise PolicyError(f"evaluation failed: {message[:300]}")
        raise self._outage("unavailable", f"OPA answered {status} {code or ''}".strip())
