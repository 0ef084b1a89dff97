"""``parsed_body`` and ``truncated_body`` of the policy input, as opa-envoy-plugin derives them.

Rules, first that applies: Envoy's ``x-envoy-auth-partial-body: true`` means truncated; a
``content-length`` larger than the body Envoy sent means truncated (nothing is parsed from a
partial body); a body over ``max_bytes`` is treated the same; then by content type (the first
entry of ``BODY_PARSERS`` whose media type the header contains): JSON,
``application/x-www-form-urlencoded`` (key -> list), ``multipart/form-data`` (field -> list, JSON
parts decoded); ``application/grpc`` (the first message, with a protoset: see grpc_body.py); any
other type gives null.

Every parser is bounded: the request path runs on the one event loop, so no body within
``max_bytes`` may cost more than a few milliseconds. Counts are checked with C-speed scans
*before* any per-item Python work (``bench/body_bench.py`` measures the worst cases); a body
over a cap is refused (a 400), never half-parsed: a policy that denies on some field must not
be bypassed by hiding the field behind the cap.
"""

from __future__ import annotations

import binascii
import codecs
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from sidegate.extauthz.grpc_body import GrpcBodyError, ProtosetDecoder, is_grpc

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"

# python-multipart logs a warning for each malformed body before raising; the raise becomes a
# BodyError with its own log line, so a hostile client would only double the log volume.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

# A Content-Type header longer than this is not a real one; its parameter parser is not linear.
MAX_CONTENT_TYPE_LENGTH = 1024
# Decoders with super-linear cost on hostile input (CVE-2022-45061): not offered as charsets.
_REFUSED_CHARSETS = frozenset({"idna", "punycode"})


class BodyError(ValueError):
    """The body claims a type it does not hold, or exceeds a cap (the client gets a 400, the
    reason goes to the log only)."""


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Caps on the work one body may cause (``authz.policy.body`` in the config file)."""

    max_bytes: int = 1_048_576
    # multipart/form-data: parts per body
    max_parts: int = 100
    # application/x-www-form-urlencoded: fields per body
    max_fields: int = 1000
    # JSON (a body, or all JSON parts of a multipart body together): values, counted
    # conservatively before parsing (every ',', '[' and '{' byte, also those inside strings)
    max_json_values: int = 10_000
    # JSON: containers within containers
    max_depth: int = 32


BodyParser = Callable[[str, bytes, BodyLimits], Any]
"""(Content-Type header as sent, body bytes, limits) -> parsed_body; raises BodyError."""


def _declared_longer(headers: dict[str, str], length: int) -> bool:
    declared = headers.get("content-length")
    if not declared:
        return False
    try:
        return int(declared) > length
    except ValueError as exc:
        raise BodyError("invalid content-length") from exc


class _JsonBudget:
    """Values left for the JSON of one body (multipart JSON parts share it)."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.left = limits.max_json_values

    def take(self, data: bytes) -> None:
        # An upper bound on the values json.loads would build, in three C scans: a comma
        # separates two values, a bracket opens one. Strings make it overcount, never under.
        upper = data.count(b",") + data.count(b"[") + data.count(b"{") + 1
        self.left -= upper
        if self.left < 0:
            raise BodyError(
                f"JSON body has more than {self.limits.max_json_values} values "
                "(commas and brackets counted)"
            )


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259) and break the policy engine's own JSON.
    raise BodyError(f"invalid JSON body: {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: a JSON number, but no double holds it
        raise BodyError("invalid JSON body: number out of range")
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    """Level by level (no recursion limit to hit); visits at most the values the budget
    allowed, and nothing when there are too few containers to nest that deep."""
    level = [value]
    for _ in range(max_depth):
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                below.extend(node.values())
            elif type(node) is list:
                below.extend(node)
        level = [node for node in below if type(node) is dict or type(node) is list]
        if not level:
            return
    raise BodyError(f"JSON body nested deeper than {max_depth}")


def _load_json(data: bytes, budget: _JsonBudget) -> Any:
    budget.take(data)
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except BodyError:
        raise
    except (ValueError, RecursionError) as exc:
        # The parser's message (offsets, fragments of the body) stays out of the answer.
        raise BodyError(f"invalid JSON body: {type(exc).__name__}") from exc
    if data.count(b"[") + data.count(b"{") > budget.limits.max_depth:
        _check_depth(value, budget.limits.max_depth)
    if b"\\ud" in data or b"\\uD" in data:
        # "\ud800" is JSON syntax but no Unicode: a lone surrogate cannot be encoded into the
        # policy input or a response. Escaped pairs (emoji) were joined by the parser.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BodyError("invalid JSON body: lone surrogate in a string") from exc
    return value


def parse_json(_content_type: str, data: bytes, limits: BodyLimits) -> Any:
    return _load_json(data, _JsonBudget(limits))


# Hex digits to "h": a percent-escape is valid exactly where "%hh" follows in the mapped body.
_HEX_AS_H = bytes.maketrans(b"0123456789ABCDEFabcdef", b"h" * 22)
# "+" is a space in a form; "%" becomes quoted-printable's "=" (see _form_unquote).
_FORM_TO_QP = bytes.maketrans(b"+%", b" =")


def _escapes_valid(data: bytes) -> bool:
    """Is every "%" followed by two hex digits? Two C passes; a regex took ~10 ms per MiB."""
    mapped = data.translate(_HEX_AS_H)
    # "%hh" cannot overlap itself, so the count is the number of valid escapes.
    return mapped.count(b"%") == mapped.count(b"%hh")


def _form_unquote(raw: bytes) -> str:
    """``+`` to space and percent-escapes decoded, then strict UTF-8; escapes already valid.

    urllib's unquote decodes escapes in a Python loop, one iteration per escape (1 MiB of
    ``%41`` took ~0.4 s here); binascii's quoted-printable decoder does it in C. ``=`` is escaped
    first and every ``%`` starts a valid escape, so every ``=`` the decoder sees is followed by
    two hex digits and no other QP rule (soft line breaks) can apply: the result is exactly the
    percent-decoding.
    """
    if b"%" in raw:
        if b"=" in raw:
            raw = raw.replace(b"=", b"=3D")
        raw = binascii.a2b_qp(raw.translate(_FORM_TO_QP))
    elif b"+" in raw:
        raw = raw.translate(_FORM_TO_QP)
    return raw.decode("utf-8")


def parse_form(_content_type: str, data: bytes, limits: BodyLimits) -> dict[str, list[str]]:
    """As Go's ``url.ParseQuery`` (opa-envoy-plugin): split on ``&``, then at the first ``=``;
    empty pairs skipped; a bad percent-escape or non-UTF-8 is an error.

    Hand-written because the format is just that split; the stdlib's ``parse_qs`` does the same
    split (with ``max_num_fields``) but decodes escapes far too slowly for the loop (see above).
    """
    if data.count(b"&") >= limits.max_fields:
        raise BodyError(f"form body has more than {limits.max_fields} fields")
    if b"%" in data and not _escapes_valid(data):
        raise BodyError("invalid percent-encoding in form body")
    fields: dict[str, list[str]] = {}
    try:
        for pair in data.split(b"&"):
            if not pair:
                continue
            name, _, value = pair.partition(b"=")
            fields.setdefault(_form_unquote(name), []).append(_form_unquote(value))
    except UnicodeDecodeError as exc:
        raise BodyError("form body is not UTF-8") from exc
    return fields


class _Part:
    __slots__ = ("data", "field", "headers", "value")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.data: list[bytes] = []
        self.field = b""
        self.value = b""

    def header(self, name: bytes) -> bytes:
        for key, value in self.headers:
            if key.strip().lower() == name:
                return value.strip()
        return b""


def _part_text(part: _Part, payload: bytes) -> str:
    _, params = parse_options_header(part.header(b"content-type"))
    charset = params.get(b"charset", b"utf-8").decode("latin-1").strip().lower() or "utf-8"
    try:
        codec = codecs.lookup(charset)
    except LookupError as exc:
        raise BodyError("multipart part with an unknown charset") from exc
    if codec.name in _REFUSED_CHARSETS or not getattr(codec, "_is_text_encoding", True):
        raise BodyError("multipart part with a charset that is not a text encoding")
    return payload.decode(codec.name, "replace")


def parse_multipart(content_type: str, data: bytes, limits: BodyLimits) -> dict[str, list[Any]]:
    """Field name -> list of values, with python-multipart's streaming parser.

    Its per-part work is Python, so the parts are counted first: every part starts with a
    delimiter line, and RFC 2046 forbids the delimiter inside a part, so counting delimiters
    (a C scan) bounds the parser's work before it starts. Parts per body, headers per part
    (python-multipart's default of 8) and header size are capped.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise BodyError("multipart body without boundary")
    if data.count(b"\r\n--" + boundary) > limits.max_parts:
        raise BodyError(f"multipart body has more than {limits.max_parts} parts")
    parts: list[_Part] = []

    def on_part_begin() -> None:
        if len(parts) >= limits.max_parts:
            raise BodyError(f"multipart body has more than {limits.max_parts} parts")
        parts.append(_Part())

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        parts[-1].field += buf[start:end]

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        parts[-1].value += buf[start:end]

    def on_header_end() -> None:
        part = parts[-1]
        part.headers.append((part.field, part.value))
        part.field, part.value = b"", b""

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        parts[-1].data.append(buf[start:end])

    ended: list[bool] = []
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_end": lambda: ended.append(True),
        },
    )
    parser.write(data)
    parser.finalize()
    if not ended:
        raise BodyError("multipart body without its closing delimiter")
    budget = _JsonBudget(limits)
    fields: dict[str, list[Any]] = {}
    for part in parts:
        disposition, options = parse_options_header(part.header(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            continue
        payload = b"".join(part.data)
        encoding = part.header(b"content-transfer-encoding").lower()
        if encoding == b"quoted-printable":  # as Go's mime/multipart (opa-envoy-plugin)
            payload = binascii.a2b_qp(payload)
        value: Any
        if parse_options_header(part.header(b"content-type"))[0] == b"application/json":
            value = _load_json(payload, budget)
        else:
            value = _part_text(part, payload)
        fields.setdefault(name.decode("utf-8", "replace"), []).append(value)
    return fields


# Media type (matched as a substring of the lower-cased Content-Type, as opa-envoy-plugin
# does) -> parser; the first match wins. Add a content type by adding an entry.
BODY_PARSERS: list[tuple[str, BodyParser]] = [
    ("application/json", parse_json),
    ("application/x-www-form-urlencoded", parse_form),
    ("multipart/form-data", parse_multipart),
]


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
    max_bytes: int | None = None,
    limits: BodyLimits | None = None,
    parsed_path: list[str] | None = None,
    grpc: ProtosetDecoder | None = None,
) -> tuple[Any, bool]:
    """(parsed_body, truncated_body) for one request; raises BodyError on a malformed body.

    gRPC bodies are decoded only with a protoset (``grpc``) and from the bytes Envoy sends with
    ``pack_as_bytes`` (the UTF-8 ``body`` field cannot carry a binary message)."""
    if limits is None:
        limits = BodyLimits() if max_bytes is None else BodyLimits(max_bytes=max_bytes)
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        return None, True
    data = raw_body or body.encode("utf-8")
    if not data:
        return None, False
    if _declared_longer(headers, len(data)):
        return None, True
    if len(data) > limits.max_bytes:
        # Over the configured cap: treated like a body Envoy cut short.
        return None, True
    content_type = headers.get("content-type", "")
    lowered = content_type.lower()
    if is_grpc(content_type):
        return _parse_grpc(grpc, parsed_path or [], raw_body)
    for media_type, parser in BODY_PARSERS:
        if media_type in lowered:
            if len(content_type) > MAX_CONTENT_TYPE_LENGTH:
                raise BodyError("content-type header too long")
            try:
                return parser(content_type, data, limits), False
            except BodyError:
                raise
            except (ValueError, LookupError, RecursionError) as exc:
                # python-multipart's parse errors, an unencodable header, a codec's complaint:
                # the body is malformed; the class name is enough for the log.
                raise BodyError(f"malformed {media_type} body: {type(exc).__name__}") from exc
    return None, False
