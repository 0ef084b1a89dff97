"""Fetching small JSON documents (discovery, JWKS) asynchronously, with timeouts and a size cap.

Only ``https`` URLs are fetched, except ``http`` to a loopback address (a local IdP, tests).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

LOOPBACK_NAMES = frozenset({"localhost"})


class FetchError(Exception):
    """A document could not be fetched or parsed; ``code`` is a short fixed label."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def check_url(url: str) -> None:
    """Raise ValueError unless ``url`` is https, or http to a loopback host."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"URL {url!r} has no host")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return
    raise ValueError(f"URL {url!r} must use https (http is allowed only to loopback)")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address (not a name that merely resolves to one)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JsonFetcher:
    """One pooled aiohttp session for a verifier's outbound GETs; created on first use."""

    def __init__(self, *, user_agent: str = "sidegate") -> None:
        self._session: aiohttp.ClientSession | None = None
        self._user_agent = user_agent

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
            )
        return self._session

    async def get_json(self, url: str, *, timeout_seconds: float, max_bytes: int) -> dict[str, Any]:
        check_url(url)
        try:
            async with self._client().get(
                url,
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
                # a redirect could lead off the configured host (SSRF); IdPs serve these directly
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise FetchError("http_status", f"GET {url} returned {response.status}")
                body = await response.content.read(max_bytes + 1)
        except FetchError:
            raise
        except TimeoutError as exc:
            raise FetchError("timeout", f"GET {url} timed out after {timeout_seconds}s") from exc
        except aiohttp.ClientError as exc:
            raise FetchError("connect", f"GET {url} failed: {type(exc).__name__}") from exc
        if len(body) > max_bytes:
            raise FetchError("too_large", f"GET {url} returned more than {max_bytes} bytes")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise FetchError("bad_json", f"GET {url} returned invalid JSON") from exc
        if not isinstance(document, dict):
            raise FetchError("bad_json", f"GET {url} returned JSON that is not an object")
        return document

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
