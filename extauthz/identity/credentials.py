"""Finding a source's credential in a request, and the header mutations that strip it."""

from __future__ import annotations

from urllib.parse import parse_qsl

from sidegate.extauthz.identity.source import CredentialLocation
from sidegate.extauthz.request_view import RequestView, split_path


def locate(location: CredentialLocation, view: RequestView) -> str | None:
    """The credential as the verifier needs it (prefix removed), or None when absent.

    An empty value after the prefix is returned as "" (a malformed credential the verifier
    rejects), unlike a header carrying another scheme, which belongs to some other source.
    """
    if location.header_name:
        raw = view.header(location.header_name)
        if raw is None:
            return None
        prefix = location.prefix
        if prefix:
            if raw[: len(prefix)].lower() != prefix.lower():
                # "Bearer" with nothing after it is still this source's (empty) credential
                return "" if raw.strip().lower() == prefix.strip().lower() else None
            raw = raw[len(prefix) :]
        return raw.strip()
    if location.query:
        _, query = split_path(view.raw_path)
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == location.query:
                return value
        return None
    if location.cookie:
        return view.cookie(location.cookie)
    return None


def cookie_without(view: RequestView, name: str) -> str | None:
    """The request's Cookie header minus cookie ``name``; None if there is nothing to change."""
    raw = view.header("cookie")
    if not raw:
        return None
    parts = [p.strip() for p in raw.split(";") if p.strip()]
    kept = [p for p in parts if p.partition("=")[0] != name]
    if len(kept) == len(parts):
        return None
    return "; ".join(kept)
