"""ShouldRateLimit answers deliberately whatever goes wrong: never INTERNAL or UNKNOWN."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from sidegate import grpc_services as gs


class Broken:
    async def should_rate_limit(self, request: Any) -> Any:
        raise RuntimeError("a bug, with a value from the request: sg_secret_value")


class Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float:
        return 1.0

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise grpc.aio.AbortError()


async def test_an_unexpected_exception_is_unavailable_without_its_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    servicer = gs.AioRateLimit(Broken(), gs.CallTracker())  # type: ignore[arg-type]
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await servicer.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="d"), context)
    assert context.aborted == (grpc.StatusCode.UNAVAILABLE, "rate limit unavailable")
    output = capsys.readouterr()
    assert "sg_secret_value" not in output.out + output.err
    assert "Traceback" not in output.out + output.err
