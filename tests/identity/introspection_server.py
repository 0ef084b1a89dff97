"""A real RFC 7662 endpoint for tests: Authlib's ``IntrospectionEndpoint`` served by aiohttp.

Authlib does the protocol (client authentication with client_secret_basic/_post, the form,
``active:false`` for unknown/expired/revoked tokens); this module only supplies its storage
hooks and a small aiohttp adapter. Switches simulate a sick server (HTTP 500, a timeout,
non-JSON, a JSON body without ``active``) and ``hits`` counts calls that reached it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request, TokenMixin
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

Mode = Literal[
    "ok", "error500", "error400", "error401", "timeout", "not_json", "no_active", "huge"
]

CLIENT_ID = "sidegate"
CLIENT_SECRET = "introspection-client-s3cret"  # a test fixture value, not a real secret


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")


@dataclass
class Token(TokenMixin):
    """An issued token. ``claims_active`` lets a test model a server that says active:true for a
    token whose ``exp`` has already passed (clock skew or a buggy server)."""

    access_token: str
    client_id: str = "orders-app"
    sub: str = "user-1"
    username: str = "alice"
    scope: str = "orders:read"
    aud: str | list[str] = "orders-api"
    iss: str = "https://as.example.test"
    token_type: str = "Bearer"
    expires_at: int = field(default_factory=lambda: int(time.time()) + 3600)
    issued_at: int = field(default_factory=lambda: int(time.time()))
    nbf: int | None = None
    revoked: bool = False
    claims_active: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check_client(self, client: Client) -> bool:
        return True

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_at - self.issued_at

    def is_expired(self) -> bool:
        if self.claims_active is not None:
            return not self.claims_active
        return self.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return self.revoked

    def get_client(self) -> None:
        return None


class _Endpoint(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def __init__(self, server: _Server, tokens: dict[str, Token]) -> None:
        super().__init__(server)
        self.tokens = tokens

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return self.tokens.get(token_string)

    def check_permission(self, token: Token, client: Client, request: OAuth2Request) -> bool:
        return client.client_id == CLIENT_ID

    def introspect_token(self, token: Token) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "active": True,
            "client_id": token.client_id,
            "token_type": token.token_type,
            "username": token.username,
            "scope": token.scope,
            "sub": token.sub,
            "aud": token.aud,
            "iss": token.iss,
            "exp": token.expires_at,
            "iat": token.issued_at,
        }
        if token.nbf is not None:
            payload["nbf"] = token.nbf
        payload.update(token.extra)
        return payload


class _FormRequest(OAuth2Request):
    def __init__(self, method: str, uri: str, headers: Mapping[str, str], form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class _Server(AuthorizationServer):
    def __init__(self, clients: dict[str, Client]) -> None:
        super().__init__()
        self.clients = clients

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: Any, request: Any) -> None:
        raise NotImplementedError("this server only introspects")

    def create_oauth2_request(self, request: _FormRequest) -> _FormRequest:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class IntrospectionServer:
    """Serves POST /introspect on 127.0.0.1 (an ephemeral port) in the running event loop."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.mode: Mode = "ok"
        self.delay = 0.0  # seconds to hold each answer (piles concurrent requests up)
        self.timeout_sleep = 30.0
        self.hits = 0
        self.auth_methods_seen: list[str] = []
        self.forms_seen: list[dict[str, str]] = []
        self._authz = _Server({CLIENT_ID: Client(CLIENT_ID, CLIENT_SECRET)})
        self._authz.register_endpoint(_Endpoint(self._authz, self.tokens))
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/introspect"

    def issue(self, access_token: str, **fields: Any) -> Token:
        token = Token(access_token, **fields)
        self.tokens[access_token] = token
        return token

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/introspect", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.forms_seen.append(form)
        self.auth_methods_seen.append(
            "client_secret_basic" if "authorization" in request.headers else "client_secret_post"
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "error500":
            return web.Response(status=500, text="internal error")
        if self.mode == "error400":
            return web.json_response({"error": "invalid_request"}, status=400)
        if self.mode == "error401":
            return web.json_response({"error": "invalid_client"}, status=401)
        if self.mode == "timeout":
            await asyncio.sleep(self.timeout_sleep)
        if self.mode == "not_json":
            return web.Response(status=200, text="<html>login</html>", content_type="text/html")
        if self.mode == "huge":
            return web.json_response({"active": True, "sub": "u", "pad": "x" * 300_000})
        if self.mode == "no_active":
            return web.json_response({"sub": "user-1"})
        oauth_request = _FormRequest("POST", str(request.url), request.headers, form)
        status, body, headers = self._authz.create_endpoint_response(
            IntrospectionEndpoint.ENDPOINT_NAME, oauth_request
        )
        return web.Response(body=json.dumps(body), status=status, headers=dict(headers))
