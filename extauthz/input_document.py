"""The policy input document, built as opa-envoy-plugin builds it, plus ``identity``.

A policy written for opa-envoy-plugin reads ``input.attributes`` (protojson names),
``input.parsed_path``, ``input.parsed_query``, ``input.parsed_body``, ``input.truncated_body``
and ``input.version``; sidegate adds ``input.identity``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from google.protobuf.json_format import MessageToDict

from extauthz.request_body import BodyError, parse_body
from extauthz.request_view import RequestView, split_path

if TYPE_CHECKING:
    from extauthz.settings import BodySettings

VERSION = {"ext_authz": "v3", "encoding": "protojson"}

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DOT_SEGMENTS = frozenset({".", ".."})


class InputError(ValueError):
    """The request cannot be turned into a policy input (answered with 400, without details)."""


def parse_path(path: str) -> list[str]:
    """Percent-decode, trim every leading '/', split on '/'.

    Trimming all leading slashes (not parsing as a URL) keeps ``//admin/x`` as
    ``["admin", "x"]``: reading ``//admin`` as an authority was GHSA-9f29-v6mm-pw6w.
    """
    if _BAD_ESCAPE.search(path):
        raise InputError("invalid percent-encoding in path")
    segments = unquote(path, errors="strict").lstrip("/").split("/")
    # A decision about "/public/../admin" is not a decision about what the upstream serves
    # ("/admin"): dot segments (also %2E-encoded) are refused, never evaluated.
    if any(segment in _DOT_SEGMENTS for segment in segments):
        raise InputError("dot segment in path")
    return segments


def parse_query(query: str) -> dict[str, list[str]]:
    if not query:
        return {}
    if _BAD_ESCAPE.search(query):
        raise InputError("invalid percent-encoding in query")
    return parse_qs(query, keep_blank_values=True, errors="strict")


def _attributes_document(view: RequestView) -> dict[str, Any]:
    """The CheckRequest in protojson names, with the two choices documented in docs/policy.md:
    int64 fields (``http.size``) are numbers, as in opa-envoy-plugin's protoreflect mapping,
    not protojson's strings; timestamps stay RFC 3339 strings (``time.parse_rfc3339_ns``)."""
    document = MessageToDict(view.request, preserving_proto_field_name=False)
    http = document.get("attributes", {}).get("request", {}).get("http")
    if http is not None:
        if "size" in http:
            http["size"] = int(http["size"])
        if "headerMap" in http and "headers" not in http:
            # Envoy's encode_raw_headers sends header_map; policies read the headers map.
            http["headers"] = dict(view.headers)
    return document


def build_input(view: RequestView, body: BodySettings | None = None) -> dict[str, Any]:
    """The opa-envoy-plugin input document for one request (identity added by the caller).

    ``body`` None or ``parse=False`` leaves out ``parsed_body``/``truncated_body``, as
    opa-envoy-plugin's ``skip-request-body-parse``.
    """
    document = _attributes_document(view)
    path, query = split_path(view.raw_path)
    try:
        document["parsed_path"] = parse_path(path)
        document["parsed_query"] = parse_query(query)
    except UnicodeDecodeError as exc:
        raise InputError("path or query is not valid UTF-8 after decoding") from exc
    if body is not None and body.parse:
        try:
            parsed, truncated = parse_body(
                view.headers, view.body, view.raw_body, max_bytes=body.max_bytes
            )
        except BodyError as exc:
            raise InputError(str(exc)) from exc
        document["parsed_body"] = parsed
        document["truncated_body"] = truncated
    document["version"] = VERSION
    if view.source_principal:
        document["source_principal"] = view.source_principal
    return document
