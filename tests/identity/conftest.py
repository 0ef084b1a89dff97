"""Shared identity fixtures: a real OIDC-style IdP on loopback (discovery + JWKS over HTTP),
signing keys made with ``cryptography``, a controllable clock, CheckRequest builders.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from tests.conftest import free_port


class FakeClock:
    """A clock tests move by hand (``advance``) instead of sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SigningKey:
    """A private key, its kid and the algorithm it signs with; ``jwk()`` is the public JWK."""

    private: Any
    kid: str
    alg: str

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithms = jwt.algorithms.get_default_algorithms()
        public = self.private.public_key()
        doc: dict[str, Any] = algorithms[self.alg].to_jwk(public, as_dict=True)
        doc["kid"] = self.kid
        doc["use"] = "sig"
        if with_alg:
            doc["alg"] = self.alg
        return doc

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        headers: Mapping[str, Any] | None = None,
        kid: str | bool | None = True,
        alg: str | None = None,
    ) -> str:
        head: dict[str, Any] = dict(headers or {})
        if kid is True:
            head["kid"] = self.kid
        elif isinstance(kid, str):
            head["kid"] = kid
        return jwt.encode(dict(claims), self.private, algorithm=alg or self.alg, headers=head)


def new_key(alg: str, kid: str | None = None) -> SigningKey:
    private: Any
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif alg == "ES512":
        private = ec.generate_private_key(ec.SECP521R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg == "Ed448":
        private, alg = ed448.Ed448PrivateKey.generate(), "EdDSA"
    else:
        raise ValueError(alg)
    return SigningKey(private=private, kid=kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", alg=alg)


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return new_key("RS256", "rsa-1")


@pytest.fixture(scope="session")
def rsa_key_2() -> SigningKey:
    return new_key("RS256", "rsa-2")


@pytest.fixture(scope="session")
def other_rsa_key() -> SigningKey:
    return new_key("RS256", "other-1")


@dataclass
class IdP:
    """A real HTTP server on loopback serving OIDC discovery and a JWKS, counting hits.

    ``keys`` is what the JWKS document lists (mutable: rotate by replacing it); ``stop()``
    takes the server down (connection refused), ``start()`` brings it back on the same port;
    ``fail_status`` makes it answer with that status instead.
    """

    port: int
    keys: list[SigningKey] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    fail_status: int | None = None
    runner: web.AppRunner | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.issuer, "sub": "user-1", "aud": "api", "iat": now, "exp": now + 300}
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        if self.fail_status:
            return web.Response(status=self.fail_status)
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_uri,
                "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys}),
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        if self.fail_status:
            return web.Response(status=self.fail_status)
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def idp(rsa_key: SigningKey) -> AsyncIterator[IdP]:
    server = IdP(port=free_port(), keys=[rsa_key])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def idp_b(other_rsa_key: SigningKey) -> AsyncIterator[IdP]:
    """A second, independent issuer."""
    server = IdP(port=free_port(), keys=[other_rsa_key])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def check_request(
    path: str = "/hello",
    *,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    host: str = "api.example.com",
    context_extensions: Mapping[str, str] | None = None,
) -> CheckRequest:
    """A CheckRequest as Envoy sends it (lower-case header names in the ``headers`` map)."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = host
    http.scheme = "http"
    http.id = uuid.uuid4().hex
    http.headers[":authority"] = host
    http.headers[":path"] = path
    http.headers[":method"] = method
    for name, value in (headers or {}).items():
        http.headers[name.lower()] = value
    for key, value in (context_extensions or {}).items():
        request.attributes.context_extensions[key] = value
    return request
