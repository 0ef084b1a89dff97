"""gRPC servicers: thin adapters from Envoy's two RPCs to the service objects.

Two flavours of each: coroutine handlers for ``grpc.aio``, and blocking handlers for the
thread-pool server that run the same coroutine on the process's event loop. Every handler is
counted by a CallTracker so that shutdown can wait for the calls already on the wire.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import grpc
import structlog
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.rpc import code_pb2

from sidegate.common import deadline, tracing
from sidegate.extauthz.check_failure import CHECK_FAILURES, describe
from sidegate.extauthz.response import denied_response
from sidegate.extauthz.service import AuthzService, CheckError
from sidegate.metrics import GRPC_ERRORS
from sidegate.ratelimit.service import RateLimitRequestError, RateLimitService, RateLimitUnavailable

log = structlog.get_logger("sidegate.server")

T = TypeVar("T")

AUTHZ_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
RATELIMIT_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
# Span names: the gRPC method, as OpenTelemetry's RPC conventions name server spans.
CHECK_SPAN = f"{AUTHZ_SERVICE}/Check"
RATELIMIT_SPAN = f"{RATELIMIT_SERVICE}/ShouldRateLimit"


class CallTracker:
    """Calls in progress and when the last one started.

    gRPC's server stop cancels calls that reached the server but were not yet handed to a
    handler; draining waits until calls stop arriving, so none of those is lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_started = time.monotonic()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.last_started = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_started


def _map_error(service: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for a failure; details stay generic (they reach Envoy's logs).

    Never INTERNAL or UNKNOWN: for Check ``on_error: grpc_error`` asks for a gRPC error, and
    FAILED_PRECONDITION (the policy cannot decide) or UNAVAILABLE say which kind it is; for
    ShouldRateLimit anything unexpected is UNAVAILABLE.
    """
    if isinstance(exc, CheckError):
        if exc.unavailable:
            code, message = grpc.StatusCode.UNAVAILABLE, "authorization dependency unavailable"
        else:
            code, message = grpc.StatusCode.FAILED_PRECONDITION, "policy error"
    elif service == "authz":
        code, message = grpc.StatusCode.UNAVAILABLE, "authorization unavailable"
    elif isinstance(exc, RateLimitUnavailable):
        code, message = grpc.StatusCode.UNAVAILABLE, "rate limit backend unavailable"
    elif isinstance(exc, RateLimitRequestError):
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    else:
        # A bug (or a wait the call's deadline cut): still a deliberate answer, never INTERNAL.
        # UNAVAILABLE lets Envoy's rate-limit failure mode (failure_mode_deny) decide; the log
        # names the type and the raising frame, never the message (it may quote a value).
        log.error("unhandled_error", service=service, error=type(exc).__name__, where=describe(exc))
        code, message = grpc.StatusCode.UNAVAILABLE, "rate limit unavailable"
    GRPC_ERRORS.labels(service, code.name).inc()
    return code, message


def _check_failed(service: AuthzService, exc: Exception) -> Any:
    """The answer to a Check that raised: a CheckResponse, or (code, message) to abort with.

    ``AuthzService.check`` is total and raises only CheckError (``on_error: grpc_error``); any
    other exception comes from the plumbing around it (the loop bridge's wait, the deadline).
    That is answered with a 503 denial rather than a gRPC error, which Envoy's
    ``failure_mode_allow`` would let through unjudged, unless grpc_error was asked for.
    """
    if not isinstance(exc, CheckError):
        log.error("check_plumbing_failed", error=type(exc).__name__, where=describe(exc))
        CHECK_FAILURES.labels("server", type(exc).__name__).inc()
        if service.settings.policy.on_error != "grpc_error":
            return denied_response(
                503, grpc_code=code_pb2.UNAVAILABLE, body="service unavailable"
            )
    return _map_error("authz", exc)


async def _within_deadline(
    context: Any, call: Coroutine[Any, Any, T], span: str, carrier: Mapping[str, str] | None
) -> T:
    """Run ``call`` with the gRPC call's deadline recorded for every outbound wait in it, inside
    the call's trace span (a no-op while tracing is off).

    Set inside the coroutine: in the thread model it runs as a new task on the loop, and the
    deadline and the span must live in that task's context.
    """
    with deadline.within_call(context.time_remaining()), tracing.server_span(span, carrier):
        return await call


def _check_carrier(request: Any) -> Mapping[str, str] | None:
    """The client's trace context travels in the request's headers (W3C or B3)."""
    if not tracing.enabled():
        return None
    http = request.attributes.request.http
    if http.headers:
        return http.headers
    return {h.key.lower(): h.value or h.raw_value.decode("utf-8", "replace")
            for h in http.header_map.headers}


def _metadata_carrier(context: Any) -> Mapping[str, str] | None:
    """Envoy puts its own trace context in the rate-limit call's gRPC metadata."""
    if not tracing.enabled():
        return None
    return {key: value for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)}


class AioAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, service: AuthzService, tracker: CallTracker) -> None:
        self.service = service
        self.tracker = tracker

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.tracker.begin()
        try:
            return await _within_deadline(
                context, self.service.check(request), CHECK_SPAN, _check_carrier(request)
            )
        except Exception as exc:  # the process must never crash on a request
            answer = _check_failed(self.service, exc)
            if not isinstance(answer, tuple):
                return answer
            await context.abort(*answer)
        finally:
            self.tracker.end()


class AioRateLimit(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, service: RateLimitService, tracker: CallTracker) -> None:
        self.service = service
        self.tracker = tracker

    async def ShouldRateLimit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.tracker.begin()
        try:
            return await _within_deadline(
                context,
                self.service.should_rate_limit(request),
                RATELIMIT_SPAN,
                _metadata_carrier(context),
            )
        except Exception as exc:
            code, message = _map_error("ratelimit", exc)
            await context.abort(code, message)
        finally:
            self.tracker.end()


class LoopBridge:
    """Runs a coroutine on the event loop from a gRPC worker thread and waits for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)


class ThreadedAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, service: AuthzService, bridge: LoopBridge, tracker: CallTracker) -> None:
        self.service = service
        self.bridge = bridge
        self.tracker = tracker

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.tracker.begin()
        try:
            return self.bridge.call(_within_deadline(
                context, self.service.check(request), CHECK_SPAN, _check_carrier(request)
            ))
        except Exception as exc:
            answer = _check_failed(self.service, exc)
            if not isinstance(answer, tuple):
                return answer
            context.abort(*answer)
        finally:
            self.tracker.end()


class ThreadedRateLimit(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(
        self, service: RateLimitService, bridge: LoopBridge, tracker: CallTracker
    ) -> None:
        self.service = service
        self.bridge = bridge
        self.tracker = tracker

    def ShouldRateLimit(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.tracker.begin()
        try:
            return self.bridge.call(
                _within_deadline(
                    context,
                    self.service.should_rate_limit(request),
                    RATELIMIT_SPAN,
                    _metadata_carrier(context),
                )
            )
        except Exception as exc:
            code, message = _map_error("ratelimit", exc)
            context.abort(code, message)
        finally:
            self.tracker.end()
