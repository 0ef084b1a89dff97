"""Building CheckRequests and reading CheckResponses in policy tests."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse


def check_request(
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    raw_body: bytes | None = None,
    policy: str | None = None,
    header_map: bool = False,
    principal: str = "",
    size: int = 0,
) -> CheckRequest:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = "api.example.com"
    http.scheme = "http"
    http.id = "req-1"
    http.protocol = "HTTP/1.1"
    if size:
        http.size = size
    all_headers = {":method": method, ":path": path, "x-request-id": "req-1", **(headers or {})}
    if header_map:
        for key, value in all_headers.items():
            http.header_map.headers.append(HeaderValue(key=key, raw_value=value.encode()))
    else:
        for key, value in all_headers.items():
            http.headers[key] = value
    if body is not None:
        http.body = body
    if raw_body is not None:
        http.raw_body = raw_body
    if policy is not None:
        request.attributes.context_extensions["policy"] = policy
    if principal:
        request.attributes.source.principal = principal
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    request.attributes.source.address.socket_address.port_value = 40000
    request.attributes.request.time.FromSeconds(1_700_000_000)
    return request


def status_of(response: CheckResponse) -> int:
    """The HTTP status the client sees (Envoy's reading of a CheckResponse)."""
    if response.status.code == 0:
        return 200
    return response.denied_response.status.code or 403


def headers_of(options: Any) -> list[tuple[str, str, bool]]:
    """(key, value, append) of HeaderValueOptions; append is always set explicitly."""
    result = []
    for option in options:
        assert option.HasField("append"), "append must be set explicitly"
        result.append((option.header.key, option.header.value, option.append.value))
    return result


def upstream_headers(response: CheckResponse) -> dict[str, str]:
    return {o.header.key: o.header.value for o in response.ok_response.headers}


def echoed(response: CheckResponse, name: str) -> Any:
    return json.loads(upstream_headers(response)[name])


def metadata_of(response: CheckResponse) -> dict[str, Any]:
    return dict(response.dynamic_metadata)
