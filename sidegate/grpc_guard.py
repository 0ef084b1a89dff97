"""Requests that do not decode as the method's message: INVALID_ARGUMENT, no traceback.

grpcio deserializes a request before any handler runs; when protobuf raises, grpcio answers
UNKNOWN (aio) or INTERNAL (thread pool) and logs a traceback per message, for every service on
the port (Check, ShouldRateLimit, health, reflection). A server interceptor is the one place that
sees every method's handler: it swaps the handler's deserializer for one that never raises (it
returns an ``Undecodable`` marker) and refuses the marker before the servicer sees it. Wrapped
handlers are cached per method, so a call costs one dictionary lookup more.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import structlog

from sidegate.metrics import GRPC_ERRORS

log = structlog.get_logger("sidegate.server")

_SHORT_NAMES = {
    "envoy.service.auth.v3.Authorization": "authz",
    "envoy.service.ratelimit.v3.RateLimitService": "ratelimit",
    "grpc.health.v1.Health": "health",
    "grpc.reflection.v1alpha.ServerReflection": "reflection",
    "grpc.reflection.v1.ServerReflection": "reflection",
}


class Undecodable:
    """Stands in for a request message that failed to decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or "the method's request message"


def safe_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    reason = f"request does not decode as {_message_name(deserializer)}"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, nesting past protobuf's recursion limit, ...
            return Undecodable(reason)

    return deserialize


def _service_label(method: str) -> str:
    service = method.lstrip("/").partition("/")[0]
    return _SHORT_NAMES.get(service, service or "unknown")


def _refused(method: str, request: Undecodable) -> tuple[grpc.StatusCode, str]:
    code = grpc.StatusCode.INVALID_ARGUMENT
    GRPC_ERRORS.labels(_service_label(method), code.name).inc()
    log.warning("undecodable_request", method=method, reason=request.reason)
    return code, request.reason


def _rebuild(handler: grpc.RpcMethodHandler, **changes: Any) -> grpc.RpcMethodHandler:
    behavior = changes.pop("behavior")
    deserializer = changes.pop("request_deserializer")
    kind = (handler.request_streaming, handler.response_streaming)
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[kind]
    return factory(
        behavior,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


def _inner_behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    kind = (handler.request_streaming, handler.response_streaming)
    return {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[kind]


class _Cache:
    """Wrapped handler per method; handlers are fixed once the server runs."""

    def __init__(self, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]):
        self._wrap = wrap
        self._lock = threading.Lock()
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        if handler is None or handler.request_deserializer is None:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        with self._lock:
            self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap_sync(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = _inner_behavior(handler)

    def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for request in requests:
            if isinstance(request, Undecodable):
                context.abort(*_refused(method, request))
            yield request

    if handler.request_streaming:

        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            return inner(checked(requests, context), context)

    else:

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                context.abort(*_refused(method, request))
            return inner(request, context)

    return _rebuild(
        handler,
        behavior=behavior,
        request_deserializer=safe_deserializer(handler.request_deserializer),
    )


def _wrap_aio(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = _inner_behavior(handler)

    async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await context.abort(*_refused(method, request))
            yield request

    async def refuse_if_undecodable(request: Any, context: Any) -> None:
        if isinstance(request, Undecodable):
            await context.abort(*_refused(method, request))

    behavior: Callable[..., Any]
    if inspect.isasyncgenfunction(inner):
        # Response streams written by yielding (reflection): stay an async generator.
        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if handler.request_streaming:
                request = checked(request, context)
            else:
                await refuse_if_undecodable(request, context)
            async for response in inner(request, context):
                yield response

        behavior = stream
    else:
        # Unary answers, and streams written with context.write (health Watch).
        async def call(request: Any, context: Any) -> Any:
            if handler.request_streaming:
                request = checked(request, context)
            else:
                await refuse_if_undecodable(request, context)
            result = inner(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result

        behavior = call
    return _rebuild(
        handler,
        behavior=behavior,
        request_deserializer=safe_deserializer(handler.request_deserializer),
    )


class DecodeGuard(grpc.ServerInterceptor):
    """For ``grpc.server`` (the thread-pool model)."""

    def __init__(self) -> None:
        self._cache = _Cache(_wrap_sync)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        return self._cache.get(handler_call_details.method, handler)


class AioDecodeGuard(grpc.aio.ServerInterceptor):
    """For ``grpc.aio.server``."""

    def __init__(self) -> None:
        self._cache = _Cache(_wrap_aio)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        return self._cache.get(handler_call_details.method, handler)
