"""Helpers for the JWT/pipeline tests: a real AuthzService (shipped policy) around a pipeline."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from sidegate.extauthz.factory import build_engine
from sidegate.extauthz.identity.base import Verifier
from sidegate.extauthz.identity.pipeline import IdentityPipeline
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings
from tests.conftest import REPO_ROOT


def authz_settings(identity: Mapping[str, Any]) -> AuthzSettings:
    return AuthzSettings.model_validate(
        {"identity": dict(identity)}, context={"base_dir": REPO_ROOT}
    )


async def start_service(
    identity: Mapping[str, Any], verifiers: Mapping[str, Verifier] | None = None
) -> AuthzService:
    settings = authz_settings(identity)
    pipeline = IdentityPipeline(settings.identity, verifiers)
    service = AuthzService(settings, build_engine(settings.policy), pipeline)
    await service.start()
    return service


def status_of(response: CheckResponse) -> int:
    if response.HasField("denied_response"):
        return int(response.denied_response.status.code)
    return 200


def denied_header(response: CheckResponse, name: str) -> str | None:
    for option in response.denied_response.headers:
        if option.header.key == name:
            return option.header.value
    return None


def upstream_headers(response: CheckResponse) -> dict[str, tuple[str, bool]]:
    """OK-response header mutations: name -> (value, append)."""
    out = {}
    for option in response.ok_response.headers:
        assert option.HasField("append"), "append must always be set explicitly"
        out[option.header.key] = (option.header.value, option.append.value)
    return out


def metadata(response: CheckResponse) -> dict[str, Any]:
    return dict(response.dynamic_metadata)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed_hs256(header: Mapping[str, Any], claims: Mapping[str, Any], secret: bytes) -> str:
    """An HS256 token signed with arbitrary bytes (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = (
        b64url(json.dumps(dict(header)).encode()) + "." + b64url(json.dumps(dict(claims)).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def unsigned(header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    return (
        b64url(json.dumps(dict(header)).encode())
        + "."
        + b64url(json.dumps(dict(claims)).encode())
        + "."
    )
