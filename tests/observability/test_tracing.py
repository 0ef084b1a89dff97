"""Tracing: nothing while off; when on, one span per call continuing the caller's trace, with a
child per stage, and never a credential among the attributes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidegate import tracing_setup
from sidegate.common import tracing
from sidegate.config import load_config
from sidegate.extauthz.factory import build_authz_service
from sidegate.grpc_services import CHECK_SPAN, RATELIMIT_SPAN, _check_carrier, _within_deadline
from sidegate.ratelimit.service import RateLimitService
from sidegate.tracing_setup import TracingSettings, start_tracing, stop_tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECRET = "Bearer do-not-log-this-token"


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata

    def time_remaining(self) -> float:
        return 5.0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def check_request(headers: dict[str, str]) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "GET"
    http.path = "/hello"
    http.host = "api.local"
    http.headers.update(headers)
    return request


def test_while_off_every_span_is_the_one_shared_no_op() -> None:
    tracing.disable()
    assert tracing.span("x", a=1) is tracing._NOOP
    assert tracing.server_span("x", {"traceparent": "00-x"}) is tracing._NOOP
    assert _check_carrier(check_request({"traceparent": "00-x"})) is None
    tracing.set_attributes(a=1)  # nothing to do, nothing raised


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = start_tracing(TracingSettings(enabled=True), exporter=memory)
    try:
        yield memory
    finally:
        stop_tracing(provider)
    assert not tracing.enabled()


async def test_a_check_continues_the_w3c_trace_with_a_child_per_stage(
    exporter: InMemorySpanExporter,
) -> None:
    service = build_authz_service(load_config(None).authz)
    await service.start()
    try:
        request = check_request(
            {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "authorization": SECRET}
        )
        await _within_deadline(
            FakeContext(), service.check(request), CHECK_SPAN, _check_carrier(request)
        )
    finally:
        await service.close()
    _flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    check = spans[CHECK_SPAN]
    assert format(check.context.trace_id, "032x") == TRACE_ID
    assert format(check.parent.span_id, "016x") == PARENT_ID
    assert check.attributes["sidegate.decision"] == "allowed"
    assert check.attributes["http.response.status_code"] == 200
    for stage in ("sidegate.identity", "sidegate.policy"):
        assert spans[stage].parent.span_id == check.context.span_id
        assert spans[stage].context.trace_id == check.context.trace_id
    assert spans["sidegate.policy"].attributes["sidegate.policy.path"] == "envoy/authz/allow"
    everything = " ".join(str(v) for s in spans.values() for v in s.attributes.values())
    assert "do-not-log-this-token" not in everything


async def test_b3_headers_are_continued_too(exporter: InMemorySpanExporter) -> None:
    service = build_authz_service(load_config(None).authz)
    await service.start()
    try:
        request = check_request(
            {"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"}
        )
        await _within_deadline(
            FakeContext(), service.check(request), CHECK_SPAN, _check_carrier(request)
        )
    finally:
        await service.close()
    _flush()
    check = {s.name: s for s in exporter.get_finished_spans()}[CHECK_SPAN]
    assert format(check.context.trace_id, "032x") == TRACE_ID
    assert format(check.parent.span_id, "016x") == PARENT_ID


async def test_should_rate_limit_has_a_bucket_take_child(exporter: InMemorySpanExporter) -> None:
    service = RateLimitService.from_settings(load_config(None).ratelimit)
    await service.start()
    try:
        request = rls_pb2.RateLimitRequest(domain="sidegate")
        entry = request.descriptors.add().entries.add()
        entry.key, entry.value = "generic_key", "limited"
        context = FakeContext((("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),))
        from sidegate.grpc_services import _metadata_carrier

        await _within_deadline(
            context, service.should_rate_limit(request), RATELIMIT_SPAN,
            _metadata_carrier(context),
        )
    finally:
        await service.close()
    _flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call = spans[RATELIMIT_SPAN]
    assert format(call.parent.span_id, "016x") == PARENT_ID
    assert call.attributes["sidegate.domain"] == "sidegate"
    assert call.attributes["sidegate.code"] == "ok"
    assert spans["sidegate.bucket_take"].parent.span_id == call.context.span_id


def _flush() -> None:
    # The batch processor exports off the request path; flush it for the assertions.
    tracing_setup.flush()


def test_a_broken_opentelemetry_install_is_a_clear_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stale(settings: TracingSettings) -> None:
        raise ImportError(
            "cannot import name 'InstrumentationScope' from "
            "'opentelemetry.proto.common.v1.common_pb2'"
        )

    monkeypatch.setattr(tracing_setup, "_exporter_class", stale)
    with pytest.raises(tracing_setup.TracingUnavailable, match="force-reinstall --no-deps"):
        start_tracing(TracingSettings(enabled=True))
    assert not tracing.enabled()


def test_tracing_is_off_unless_configured() -> None:
    assert start_tracing(TracingSettings()) is None
    assert not tracing.enabled()
