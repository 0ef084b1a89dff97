"""Issue 9, "Check is total": every exception becomes a deliberate, logged, counted answer.

In-process AuthzService with the real embedded engine; the failures are injected where a bug or
a hostile input would raise (identity, input, policy, response shaping, the request view).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from sidegate.common import deadline
from sidegate.extauthz import service as service_module
from sidegate.extauthz.identity.base import ANONYMOUS_IDENTITY, AnonymousAuthenticator
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.service import AuthzService, CheckError
from sidegate.extauthz.settings import AuthzSettings
from tests.policy.helpers import check_request, status_of

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
SECRET = "tok-3f9a-never-logged"

BODY_POLICY = """package app
import rego.v1

default allow := false

allow if input.parsed_body.ok == true
allow if input.truncated_body == false
"""


class Exploding(AnonymousAuthenticator):
    """An identity stage that raises what a bug or hostile input might, message included."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def authenticate(self, view: Any) -> Any:
        raise self.exc


async def make_service(
    directory: Path = REPO_POLICIES,
    authenticator: Any = None,
    **policy: Any,
) -> AuthzService:
    settings = AuthzSettings.model_validate({"policy": {"directory": str(directory), **policy}})
    service = AuthzService(settings, EmbeddedEngine(settings.policy.directory), authenticator)
    await service.start()
    return service


def failures(stage: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "sidegate_authz_check_failures_total", {"stage": stage, "reason": reason}
    )
    return value or 0.0


def assert_quiet(logs: list[dict[str, Any]]) -> None:
    text = repr(logs)
    assert SECRET not in text
    assert "Traceback" not in text
    assert all("exc_info" not in entry and "exception" not in entry for entry in logs)


@pytest.mark.parametrize(
    ("on_error", "status", "grpc_code"),
    [("deny", 403, code_pb2.PERMISSION_DENIED), ("unavailable", 503, code_pb2.UNAVAILABLE)],
)
@pytest.mark.parametrize(
    "exc",
    [RuntimeError(SECRET), RecursionError(SECRET), KeyError(SECRET), UnicodeError(SECRET)],
    ids=lambda exc: type(exc).__name__,
)
async def test_identity_exception_is_answered_per_on_error(exc, on_error, status, grpc_code):
    service = await make_service(authenticator=Exploding(exc), on_error=on_error)
    before = failures("identity", type(exc).__name__)
    with capture_logs() as logs:
        response = await service.check(check_request("/hello"))
    await service.close()
    assert status_of(response) == status
    assert response.status.code == grpc_code
    assert response.dynamic_metadata["decision_id"]
    assert failures("identity", type(exc).__name__) == before + 1
    [failed] = [e for e in logs if e["event"] == "check_failed"]
    assert failed["stage"] == "identity" and failed["error"] == type(exc).__name__
    assert failed["decision_id"] == response.dynamic_metadata["decision_id"]
    assert "test_check_total.py" in failed["where"]
    [check] = [e for e in logs if e["event"] == "check"]
    assert check["decision"] == ("error" if on_error == "deny" else "unavailable")
    assert check["reason"] == f"identity failed: {type(exc).__name__}"
    assert_quiet(logs)


async def test_grpc_error_mode_raises_check_error_never_anything_else():
    service = await make_service(authenticator=Exploding(ValueError(SECRET)), on_error="grpc_error")
    with capture_logs() as logs, pytest.raises(CheckError) as raised:
        await service.check(check_request("/hello"))
    await service.close()
    assert raised.value.unavailable is False
    assert SECRET not in str(raised.value)
    assert_quiet(logs)


@pytest.mark.parametrize("on_error", ["deny", "unavailable"])
async def test_deadline_in_any_stage_is_an_outage(on_error):
    service = await make_service(
        authenticator=Exploding(deadline.DeadlineExceeded()), on_error=on_error
    )
    response = await service.check(check_request("/hello"))
    assert status_of(response) == 503 and response.status.code == code_pb2.UNAVAILABLE
    service.authenticator = Exploding(TimeoutError())
    assert status_of(await service.check(check_request("/hello"))) == 503
    await service.close()


async def test_policy_engine_exception_is_answered(monkeypatch):
    service = await make_service()

    async def broken(path: str, document: Any) -> Any:
        raise TypeError(SECRET)

    monkeypatch.setattr(service.engine, "evaluate", broken)
    with capture_logs() as logs:
        response = await service.check(check_request("/hello"))
    await service.close()
    assert status_of(response) == 403
    [failed] = [e for e in logs if e["event"] == "check_failed"]
    assert failed["stage"] == "policy"
    assert_quiet(logs)


async def test_response_shaping_exception_is_answered(monkeypatch):
    service = await make_service(on_error="unavailable")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(SECRET)

    monkeypatch.setattr(service_module, "decision_response", broken)
    with capture_logs() as logs:
        response = await service.check(check_request("/hello"))
    await service.close()
    assert status_of(response) == 503
    [failed] = [e for e in logs if e["event"] == "check_failed"]
    assert failed["stage"] == "response"
    assert_quiet(logs)


async def test_request_view_exception_is_answered(monkeypatch):
    service = await make_service()

    def broken(request: Any) -> Any:
        raise AttributeError(SECRET)

    monkeypatch.setattr(service_module.RequestView, "from_check_request", broken)
    with capture_logs() as logs:
        response = await service.check(check_request("/hello"))
    await service.close()
    assert status_of(response) == 403
    [failed] = [e for e in logs if e["event"] == "check_failed"]
    assert failed["stage"] == "request"
    [check] = [e for e in logs if e["event"] == "check"]
    assert check["path"] is None
    assert_quiet(logs)


@pytest.mark.parametrize("path", ["/a/../admin", "/%zz", "/%2E%2E/x", "/%ff%fe"])
async def test_input_errors_are_permission_denied_with_400(path):
    """opa-envoy-plugin answers PERMISSION_DENIED + HTTP 400; INVALID_ARGUMENT would make an
    Envoy that only reads 7/16 as denials apply status_on_error or failure_mode_allow."""
    service = await make_service()
    with capture_logs() as logs:
        response = await service.check(check_request(path))
    await service.close()
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.status.code == 400
    assert response.denied_response.body == "bad request"
    [check] = [e for e in logs if e["event"] == "check"]
    assert check["decision"] == "invalid" and check["status"] == 400
    assert not [e for e in logs if e["event"] == "check_failed"]


MULTIPART = "multipart/form-data; boundary=XyZ"


def multipart(*parts: str) -> str:
    return "".join(f"--XyZ\r\n{part}\r\n" for part in parts) + "--XyZ--\r\n"


async def test_multipart_bogus_charset_is_400_not_internal(tmp_path):
    """Issue 9's known crash: charset=x-bogus raised LookupError -> gRPC INTERNAL."""
    (tmp_path / "app.rego").write_text(BODY_POLICY)
    service = await make_service(tmp_path, default_path="app/allow")
    body = multipart(
        'Content-Disposition: form-data; name="a"\r\n'
        "Content-Type: text/plain; charset=x-bogus\r\n\r\nhi"
    )
    with capture_logs() as logs:
        response = await service.check(
            check_request("/up", method="POST", headers={"content-type": MULTIPART}, body=body)
        )
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert status_of(response) == 400
    assert_quiet(logs)
    ok = multipart(
        'Content-Disposition: form-data; name="ok"\r\nContent-Type: application/json\r\n\r\ntrue'
    )
    response = await service.check(
        check_request("/up", method="POST", headers={"content-type": MULTIPART}, body=ok)
    )
    await service.close()
    assert status_of(response) == 200


async def test_body_over_a_cap_is_400_when_read(tmp_path):
    (tmp_path / "app.rego").write_text(BODY_POLICY)
    service = await make_service(tmp_path, default_path="app/allow", body={"max_parts": 2})
    parts = ['Content-Disposition: form-data; name="f"\r\n\r\nv'] * 3
    response = await service.check(
        check_request(
            "/up", method="POST", headers={"content-type": MULTIPART}, body=multipart(*parts)
        )
    )
    assert status_of(response) == 400
    response = await service.check(
        check_request(
            "/up", method="POST", headers={"content-type": MULTIPART}, body=multipart(*parts[:2])
        )
    )
    await service.close()
    assert status_of(response) == 200  # truncated_body == false


async def test_servicer_answers_plumbing_failures_with_a_denial(monkeypatch):
    """Beyond AuthzService.check (the loop bridge, the deadline): a 503 denial, never a gRPC
    error that failure_mode_allow would let through; grpc_error mode asks for UNAVAILABLE."""
    import grpc

    from sidegate import grpc_services as gs

    class Context:
        def time_remaining(self) -> float:
            return 1.0

        async def abort(self, code: Any, message: str) -> None:
            raise RuntimeError((code, message))

    for on_error, expected in (("deny", 503), ("grpc_error", grpc.StatusCode.UNAVAILABLE)):
        service = await make_service(on_error=on_error)

        async def broken(request: Any) -> Any:
            raise TimeoutError(SECRET)

        monkeypatch.setattr(service, "check", broken)
        servicer = gs.AioAuthorization(service, gs.CallTracker())
        if expected == 503:
            response = await servicer.Check(check_request("/hello"), Context())
            assert status_of(response) == 503
            assert response.status.code == code_pb2.UNAVAILABLE
        else:
            with pytest.raises(RuntimeError) as aborted:
                await servicer.Check(check_request("/hello"), Context())
            assert aborted.value.args[0][0] == expected
        await service.close()
    errors = [gs._map_error("authz", CheckError("x", unavailable=flag))[0] for flag in (0, 1)]
    assert errors == [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE]
    assert gs._map_error("authz", KeyError("x"))[0] == grpc.StatusCode.UNAVAILABLE


def test_anonymous_identity_still_answers():
    """Sanity: the fixtures above use the default identity when none is injected."""
    assert ANONYMOUS_IDENTITY.method
