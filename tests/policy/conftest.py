"""Fixtures for policy tests: one service factory per engine (embedded, remote OPA stand-in)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sidegate.extauthz.factory import build_engine
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings
from tests.policy.opa_standin import OpaStandIn

CASES_DIR = Path(__file__).parent / "rego"
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"

ServiceFactory = Callable[..., Awaitable[AuthzService]]


@pytest.fixture(params=["embedded", "remote"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make_service(engine_kind: str) -> AsyncIterator[ServiceFactory]:
    """``await make_service(directory=..., **policy_settings)``: a started AuthzService whose
    engine is embedded, or remote against an OPA stand-in serving the same directory."""
    started: list[Any] = []

    async def factory(
        directory: Path = CASES_DIR, authenticator: Any = None, **policy: Any
    ) -> AuthzService:
        policy = {"directory": str(directory), "default_path": "cases/allow_true", **policy}
        if engine_kind == "remote":
            standin = OpaStandIn(directory)
            server = TestServer(standin.app, host="127.0.0.1")
            await server.start_server()
            started.append(server)
            policy["engine"] = "remote"
            policy.setdefault("remote", {"url": str(server.make_url("")), "timeout": 5.0})
        settings = AuthzSettings.model_validate({"policy": policy})
        service = AuthzService(settings, build_engine(settings.policy), authenticator)
        await service.start()
        started.append(service)
        return service

    yield factory
    for item in reversed(started):
        await item.close()
