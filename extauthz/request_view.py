"""A read-only view of one CheckRequest: the fields every later stage needs, extracted once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest


def split_path(raw_path: str) -> tuple[str, str]:
    """Split the raw request-target at the first '?' into (path, query)."""
    path, _, query = raw_path.partition("?")
    return path, query


@dataclass
class RequestView:
    """What sidegate reads of a CheckRequest.

    Header names are lower-case (Envoy sends them so; ``header_map`` requests are folded the
    same way, duplicates comma-joined as Envoy does for the ``headers`` map).
    """

    request: CheckRequest
    method: str
    raw_path: str
    host: str
    scheme: str
    request_id: str
    headers: dict[str, str]
    context_extensions: dict[str, str]
    body: str = ""
    raw_body: bytes = b""
    source_principal: str = ""

    @classmethod
    def from_check_request(cls, request: CheckRequest) -> RequestView:
        attrs = request.attributes
        http = attrs.request.http
        headers: dict[str, str]
        if http.headers:
            headers = dict(http.headers)
        else:
            headers = {}
            for hv in http.header_map.headers:
                value = hv.value or hv.raw_value.decode("utf-8", "replace")
                key = hv.key.lower()
                headers[key] = f"{headers[key]},{value}" if key in headers else value
        return cls(
            request=request,
            method=http.method,
            raw_path=http.path,
            host=http.host,
            scheme=http.scheme,
            # Envoy's x-request-id (the UUID its access log carries), not the numeric stream id.
            request_id=headers.get("x-request-id") or http.id,
            headers=headers,
            context_extensions=dict(attrs.context_extensions),
            body=http.body,
            raw_body=http.raw_body,
            source_principal=attrs.source.principal,
        )

    @property
    def path_only(self) -> str:
        """The request path without the query, still percent-encoded."""
        return split_path(self.raw_path)[0]

    @cached_property
    def decoded_path(self) -> str:
        """The percent-decoded path, for route matching (prefixes)."""
        return unquote(self.path_only)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def cookie(self, name: str) -> str | None:
        raw = self.headers.get("cookie")
        if not raw:
            return None
        for part in raw.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None
