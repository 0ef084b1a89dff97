"""Spans for the request path, at no cost while tracing is off.

The services call ``span(...)``/``server_span(...)`` unconditionally; until the process turns
tracing on (``enable``, done by ``sidegate.tracing_setup`` from the config) they get one shared
no-op context manager: no OpenTelemetry import, no allocation, one global read per call. When
on, the spans are the OpenTelemetry SDK's, exported by the SDK's OTLP exporter.

Attributes never carry a credential: callers pass decisions, reasons, tiers, consumers, rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

_NOOP = contextlib.nullcontext()

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_propagator: Any = None


def enable(tracer: Any, propagator: Any) -> None:
    global _tracer, _propagator
    _tracer, _propagator = tracer, propagator


def disable() -> None:
    global _tracer, _propagator
    _tracer = _propagator = None


def enabled() -> bool:
    return _tracer is not None


def server_span(name: str, carrier: Mapping[str, str] | None, **attributes: Any) -> Any:
    """The span of one gRPC call, continuing the trace whose context ``carrier`` holds.

    ``carrier`` is the request's headers (W3C ``traceparent``/``tracestate``, B3 single or
    multi-header, as Envoy and clients send them); without one, a new trace starts.
    """
    tracer = _tracer
    if tracer is None:
        return _NOOP
    from opentelemetry.trace import SpanKind

    context = _propagator.extract(carrier) if carrier and _propagator is not None else None
    return tracer.start_as_current_span(
        name, context=context, kind=SpanKind.SERVER, attributes=_clean(attributes)
    )


def span(name: str, **attributes: Any) -> Any:
    """A child of the current span (a stage: identity, policy, bucket take)."""
    tracer = _tracer
    if tracer is None:
        return _NOOP
    return tracer.start_as_current_span(name, attributes=_clean(attributes))


def set_attributes(**attributes: Any) -> None:
    """Attributes known only after the work (decision, reason) on the current span."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(_clean(attributes))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    # OpenTelemetry attribute values are str/bool/int/float (or lists of one); None is left out.
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return out
