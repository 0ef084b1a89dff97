"""``parsed_body`` and ``truncated_body`` of the policy input, as opa-envoy-plugin derives them.

Rules, first that applies: Envoy's ``x-envoy-auth-partial-body: true`` means truncated; a
``content-length`` larger than the body Envoy sent means truncated (nothing is parsed from a
partial body); then by content type: JSON, ``application/x-www-form-urlencoded`` (key -> list),
``multipart/form-data`` (field -> list, JSON parts decoded), ``application/grpc`` (the first
message, with a protoset: see grpc_body.py); any other type gives null.
"""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from sidegate.extauthz.grpc_body import GrpcBodyError, ProtosetDecoder, is_grpc

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"


class BodyError(ValueError):
    """The body claims a type it does not hold (the client gets a 400 without the details)."""


def _declared_longer(headers: dict[str, str], length: int) -> bool:
    declared = headers.get("content-length")
    if not declared:
        return False
    try:
        return int(declared) > length
    except ValueError as exc:
        raise BodyError("invalid content-length") from exc


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        # The parser's message (offsets, fragments of the body) stays in the log only.
        raise BodyError(f"invalid JSON body: {type(exc).__name__}") from exc


def _parse_form(data: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(data.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyError("invalid form body") from exc


def _parse_multipart(content_type: str, data: bytes) -> dict[str, list[Any]]:
    if "boundary=" not in content_type:
        raise BodyError("multipart body without boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + data)
    if not message.is_multipart() or message.defects:
        raise BodyError("invalid multipart body")
    fields: dict[str, list[Any]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_content_type() == "application/json":
            value: Any = _parse_json(payload)
        else:
            charset = part.get_content_charset() or "utf-8"
            value = payload.decode(charset, "replace")
        fields.setdefault(name, []).append(value)
    return fields


def _parse_grpc(
    decoder: ProtosetDecoder | None, parsed_path: list[str], raw_body: bytes
) -> tuple[Any, bool]:
    if decoder is None or not raw_body:
        return None, False
    try:
        decoded = decoder.decode(parsed_path, raw_body)
    except GrpcBodyError as exc:
        raise BodyError(str(exc)) from exc
    return decoded.parsed, decoded.truncated


def parse_body(
    headers: dict[str, str],
    body: str,
    raw_body: bytes,
    *,
    max_bytes: int,
    parsed_path: list[str] | None = None,
    grpc: ProtosetDecoder | None = None,
) -> tuple[Any, bool]:
    """(parsed_body, truncated_body) for one request; raises BodyError on a malformed body.

    gRPC bodies are decoded only with a protoset (``grpc``) and from the bytes Envoy sends with
    ``pack_as_bytes`` (the UTF-8 ``body`` field cannot carry a binary message)."""
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        return None, True
    data = raw_body or body.encode("utf-8")
    if not data:
        return None, False
    if _declared_longer(headers, len(data)):
        return None, True
    if len(data) > max_bytes:
        # Over the configured cap: treated like a body Envoy cut short.
        return None, True
    content_type = headers.get("content-type", "")
    lowered = content_type.lower()
    if is_grpc(content_type):
        return _parse_grpc(grpc, parsed_path or [], raw_body)
    if "application/json" in lowered:
        return _parse_json(data), False
    if "application/x-www-form-urlencoded" in lowered:
        return _parse_form(data), False
    if "multipart/form-data" in lowered:
        return _parse_multipart(content_type, data), False
    return None, False
