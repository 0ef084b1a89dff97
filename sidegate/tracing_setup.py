"""Turns tracing on from the ``tracing`` config section: the OpenTelemetry SDK, OTLP export."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sidegate import __version__
from sidegate.common import tracing


class TracingSettings(BaseModel):
    """OpenTelemetry tracing of Check and ShouldRateLimit calls (off by default, no cost then)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Export OpenTelemetry spans of every Check and ShouldRateLimit (off: no cost).
    enabled: bool = False
    # OTLP over gRPC (port 4317 by convention) or HTTP/protobuf (4318, path /v1/traces).
    exporter: Literal["otlp_grpc", "otlp_http"] = "otlp_grpc"
    # The collector; for otlp_http the full URL of the traces endpoint.
    endpoint: str = "http://127.0.0.1:4317"
    # Plain-text gRPC to the collector (a sidecar collector on loopback); false for TLS.
    insecure: bool = True
    # The service.name resource attribute of every span.
    service_name: str = Field("sidegate", min_length=1)
    # Share of traces sampled when the caller made no choice (a parent's sampled flag wins).
    sample_ratio: float = Field(1.0, ge=0, le=1)
    # Trace-context formats read from the request headers: W3C traceparent, B3 (Envoy's
    # default for Zipkin), or both.
    propagators: list[Literal["tracecontext", "b3"]] = Field(
        default_factory=lambda: ["tracecontext", "b3"], min_length=1
    )
    # Seconds the exporter may take per batch; spans are exported off the request path.
    export_timeout_s: float = Field(10.0, gt=0, le=60)


def _exporter_class(settings: TracingSettings) -> Any:
    if settings.exporter == "otlp_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter


def _exporter(settings: TracingSettings) -> Any:
    exporter_class = _exporter_class(settings)
    if settings.exporter == "otlp_http":
        return exporter_class(endpoint=settings.endpoint, timeout=settings.export_timeout_s)
    return exporter_class(
        endpoint=settings.endpoint, insecure=settings.insecure, timeout=settings.export_timeout_s
    )


def _propagator(names: list[str]) -> Any:
    from opentelemetry.propagators.b3 import B3MultiFormat
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # B3MultiFormat also reads the single "b3" header.
    known = {"tracecontext": TraceContextTextMapPropagator, "b3": B3MultiFormat}
    return CompositePropagator([known[name]() for name in names])


class TracingUnavailable(Exception):
    """Tracing is configured but its packages are missing or broken (worded for the operator)."""


def check_installed(settings: TracingSettings) -> None:
    """Fail at start-up, with the fix, rather than at the first exported batch."""
    try:
        _exporter_class(settings)
        _propagator(settings.propagators)
    except ImportError as exc:
        if "InstrumentationScope" in str(exc):
            raise TracingUnavailable(
                "tracing: the opentelemetry-proto modules were overwritten by xds-protos' stale "
                "copy (grpc/grpc#42926); run: pip install --force-reinstall --no-deps "
                "opentelemetry-proto"
            ) from None
        raise TracingUnavailable(
            f"tracing: {exc.name or 'a package'} is not installed; run: "
            "pip install 'sidegate[tracing]'"
        ) from None


def start_tracing(settings: TracingSettings, exporter: Any = None) -> Any:
    """Install the SDK's provider and turn the request-path spans on; returns the provider
    (``shutdown()`` flushes it). ``exporter`` replaces the OTLP one (tests: in-memory)."""
    if not settings.enabled:
        tracing.disable()
        return None
    if exporter is None:
        check_installed(settings)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(settings)))
    global _provider
    _provider = provider
    tracing.enable(provider.get_tracer("sidegate", __version__), _propagator(settings.propagators))
    return provider


_provider: Any = None


def flush(timeout_s: float = 10.0) -> None:
    """Export what the batch processor still holds (tests; shutdown flushes by itself)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def stop_tracing(provider: Any) -> None:
    global _provider
    tracing.disable()
    if provider is not None:
        provider.shutdown()
    _provider = None
