"""The remote engine's own failure modes, against the OPA stand-in (no OPA binary available).

Timeouts and outages are dependency failures (503, or a gRPC error when configured), counted
under their own metric labels, never as denials.
"""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import TestServer
from google.rpc import code_pb2
from prometheus_client import REGISTRY
from pydantic import ValidationError

from sidegate.common import deadline
from sidegate.extauthz.factory import build_engine
from sidegate.extauthz.policy.engine import UNDEFINED, PolicyError
from sidegate.extauthz.policy.remote_opa import RemoteOpaEngine
from sidegate.extauthz.service import AuthzService, CheckError
from sidegate.extauthz.settings import AuthzSettings
from tests.conftest import free_port
from tests.policy.conftest import CASES_DIR
from tests.policy.helpers import check_request, status_of
from tests.policy.opa_standin import OpaStandIn


def errors(kind: str) -> float:
    labels = {"engine": "remote", "kind": kind}
    return REGISTRY.get_sample_value("sidegate_policy_engine_errors_total", labels) or 0.0


def denials() -> float:
    labels = {"result": "deny", "dry_run": "false"}
    return REGISTRY.get_sample_value("sidegate_policy_decisions_total", labels) or 0.0


@pytest.fixture
async def standin():
    opa = OpaStandIn(CASES_DIR)
    server = TestServer(opa.app, host="127.0.0.1")
    await server.start_server()
    opa.url = str(server.make_url(""))  # type: ignore[attr-defined]
    yield opa
    await server.close()


async def service_for(
    url: str, *, opa_timeout: float = 5.0, on_error: str = "deny"
) -> AuthzService:
    settings = AuthzSettings.model_validate(
        {
            "policy": {
                "engine": "remote",
                "default_path": "cases/allow_true",
                "on_error": on_error,
                "remote": {"url": url, "timeout": opa_timeout},
            }
        }
    )
    service = AuthzService(settings, build_engine(settings.policy))
    await service.start()
    return service


async def test_engine_reads_result_and_undefined(standin):
    engine = RemoteOpaEngine(standin.url, timeout=5)
    await engine.start()
    try:
        assert (await engine.evaluate("cases/allow_true", {})).value is True
        assert (await engine.evaluate("/cases/allow_false/", {})).value is False
        assert (await engine.evaluate("cases/undefined_rule", {})).value is UNDEFINED
        with pytest.raises(PolicyError) as caught:
            await engine.evaluate("cases/conflict", {"parsed_path": ["x"]})
        assert not caught.value.outage and caught.value.kind == "evaluation"
    finally:
        await engine.close()


async def test_pooled_session_reuses_connections(standin):
    engine = RemoteOpaEngine(standin.url, timeout=5, max_connections=2)
    await engine.start()
    try:
        for _ in range(20):
            await engine.evaluate("cases/allow_true", {})
        connector = engine._session.connector  # type: ignore[union-attr]
        assert connector is not None and connector.limit == 2
        assert standin.requests == 20
    finally:
        await engine.close()


async def test_timeout_is_an_outage_counted_apart(standin):
    standin.delay = 0.5
    service = await service_for(standin.url, opa_timeout=0.05)
    try:
        before_timeouts, before_denials = errors("timeout"), denials()
        response = await service.check(check_request())
        assert response.status.code == code_pb2.UNAVAILABLE
        assert status_of(response) == 503
        assert response.denied_response.body == "service unavailable"
        assert errors("timeout") == before_timeouts + 1
        assert denials() == before_denials
    finally:
        await service.close()


async def test_no_time_left_in_the_call_is_a_timeout_without_asking_opa(standin):
    service = await service_for(standin.url, opa_timeout=5.0)
    try:
        before_timeouts, before_denials = errors("timeout"), denials()
        with deadline.within_call(0.0):
            response = await service.check(check_request())
        assert status_of(response) == 503
        assert errors("timeout") == before_timeouts + 1
        assert denials() == before_denials
        assert standin.requests == 0  # nothing was sent: the answer could not be used
    finally:
        await service.close()


async def test_the_call_deadline_cuts_the_opa_wait(standin):
    # OPA hangs far longer than the engine's own timeout: only the gRPC call's deadline
    # (0.3 s) can end the wait this early; the bound below is generous (the machine is slow).
    standin.delay = 120.0
    service = await service_for(standin.url, opa_timeout=60.0)
    try:
        before = errors("timeout")
        started = time.monotonic()
        with deadline.within_call(0.3):
            response = await service.check(check_request())
        assert time.monotonic() - started < 30.0
        assert status_of(response) == 503
        assert errors("timeout") == before + 1
        assert standin.requests == 1
    finally:
        await service.close()


async def test_unreachable_opa_is_an_outage(standin):
    service = await service_for(f"http://127.0.0.1:{free_port()}")
    try:
        before = errors("unavailable")
        response = await service.check(check_request())
        assert status_of(response) == 503
        assert errors("unavailable") == before + 1
    finally:
        await service.close()


async def test_opa_server_error_is_an_outage(standin):
    standin.fail_status = 503
    service = await service_for(standin.url)
    try:
        assert status_of(await service.check(check_request())) == 503
    finally:
        await service.close()


async def test_outage_as_grpc_error_for_status_on_error(standin):
    standin.fail_status = 500
    service = await service_for(standin.url, on_error="grpc_error")
    try:
        with pytest.raises(CheckError) as caught:
            await service.check(check_request())
        assert caught.value.unavailable
    finally:
        await service.close()


async def test_evaluation_error_is_not_an_outage(standin):
    service = await service_for(standin.url)
    try:
        before = errors("evaluation")
        response = await service.check(check_request(policy="cases/conflict"))
        assert status_of(response) == 403  # on_error deny: an error, not a 503 outage
        assert errors("evaluation") == before + 1
    finally:
        await service.close()


@pytest.mark.parametrize("url", ["127.0.0.1:8181", "ftp://opa", "http://opa/?x=1"])
def test_remote_url_must_be_http(url):
    with pytest.raises(ValidationError, match="url"):
        AuthzSettings.model_validate({"policy": {"engine": "remote", "remote": {"url": url}}})
