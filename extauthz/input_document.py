"""The policy input document, built as opa-envoy-plugin builds it, plus ``identity``.

A policy written for opa-envoy-plugin reads ``input.attributes`` (protojson names),
``input.parsed_path``, ``input.parsed_query``, ``input.parsed_body``, ``input.truncated_body``
and ``input.version``; sidegate adds ``input.identity``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from sidegate.extauthz.policy.input_paths import PathTree, prune
from sidegate.extauthz.request_body import BodyError, parse_body
from sidegate.extauthz.request_view import RequestView, split_path

if TYPE_CHECKING:
    from sidegate.extauthz.grpc_body import ProtosetDecoder
    from sidegate.extauthz.settings import BodySettings

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


def _as_is(value: Any) -> Any:
    return value


# By wire type, not C++ type: bytes share CPPTYPE_STRING but protojson writes them in base64.
_SCALARS = {
    FieldDescriptor.TYPE_STRING: _as_is,
    FieldDescriptor.TYPE_BOOL: _as_is,
    **dict.fromkeys(
        (
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_SFIXED32,
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_FIXED32,
        ),
        _as_is,
    ),
    # protojson writes 64-bit integers as strings; _attributes_document fixes the one it uses
    **dict.fromkeys(
        (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_FIXED64,
        ),
        str,
    ),
}


class _NotSimple(Exception):
    """A named field whose protojson form is left to MessageToDict (bytes, floats, lists...)."""


# How _convert_fields converts one field (what a field is never changes).
_STRING_MAP, _MESSAGE, _SCALAR, _NOT_SIMPLE = range(4)


class _Field(NamedTuple):
    json_name: str
    name: str
    kind: int
    has_presence: bool
    scalar: Callable[[Any], Any] | None


@functools.cache
def _fields(descriptor: Descriptor) -> tuple[_Field, ...]:
    """The fields of a message type in declaration order (protojson's), read off the
    descriptor once per type: reading ``json_name``, ``GetOptions()`` and friends for every
    field of every message level was most of a Check's input build (9.5 -> 4.5 µs for the
    RBAC input with these cached). The set of message types is the CheckRequest schema's:
    bounded."""
    fields = []
    for field in descriptor.fields:
        message_type = field.message_type
        scalar = None
        if message_type is not None and message_type.GetOptions().map_entry:
            entry = message_type.fields_by_name
            simple = {entry["key"].type, entry["value"].type} == {field.TYPE_STRING}
            kind = _STRING_MAP if simple else _NOT_SIMPLE
        elif field.is_repeated:
            kind = _NOT_SIMPLE
        elif message_type is not None:
            kind = _MESSAGE
        elif field.type in _SCALARS:
            kind, scalar = _SCALAR, _SCALARS[field.type]
        else:
            kind = _NOT_SIMPLE
        fields.append(_Field(field.json_name, field.name, kind, field.has_presence, scalar))
    return tuple(fields)


def _convert(message: Message, tree: PathTree | None) -> Any:
    """``prune(MessageToDict(message), tree)``, converting only the fields ``tree`` names.

    Singular messages, string maps and plain scalars are converted here as protojson does
    (fields at their default value left out); any other named field, and the well-known types
    (their JSON form is not their fields), fall back to MessageToDict for that message.
    """
    descriptor: Descriptor = message.DESCRIPTOR
    if tree is None or descriptor.full_name.startswith("google.protobuf."):
        return prune(MessageToDict(message), tree)
    try:
        return _convert_fields(message, descriptor, tree)
    except _NotSimple:
        return prune(MessageToDict(message), tree)


def _convert_fields(message: Message, descriptor: Descriptor, tree: PathTree) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for field in _fields(descriptor):
        if field.json_name not in tree:
            continue
        subtree = tree[field.json_name]
        kind = field.kind
        if kind == _NOT_SIMPLE:
            raise _NotSimple
        value = getattr(message, field.name)
        if kind == _STRING_MAP:
            if value:
                document[field.json_name] = prune(dict(value), subtree)
        elif kind == _MESSAGE:
            if message.HasField(field.name):
                document[field.json_name] = _convert(value, subtree)
        else:
            present = message.HasField(field.name) if field.has_presence else bool(value)
            if present:
                document[field.json_name] = field.scalar(value)  # type: ignore[misc]
    return document


def _attributes_document(view: RequestView, tree: PathTree | None = None) -> dict[str, Any]:
    """The CheckRequest in protojson names, with the two choices documented in docs/policy.md:
    int64 fields (``http.size``) are numbers, as in opa-envoy-plugin's protoreflect mapping,
    not protojson's strings; timestamps stay RFC 3339 strings (``time.parse_rfc3339_ns``).

    ``tree`` (a path tree of the input) limits the conversion to what it names."""
    if tree is not None:
        if "attributes" not in tree:
            return {}
        tree = {"attributes": tree["attributes"]}
    document: dict[str, Any] = _convert(view.request, tree)
    http = document.get("attributes", {}).get("request", {}).get("http")
    if http is not None:
        if "size" in http:
            http["size"] = int(http["size"])
        http_tree = _subtree(tree, "attributes", "request", "http")
        wants_headers = http_tree is None or "headers" in http_tree
        if (
            wants_headers
            and "headers" not in http
            and view.request.attributes.request.http.HasField("header_map")
        ):
            # Envoy's encode_raw_headers sends header_map; policies read the headers map.
            http["headers"] = prune(dict(view.headers), _subtree(http_tree, "headers"))
    return document


def _subtree(tree: PathTree | None, *keys: str) -> PathTree | None:
    for key in keys:
        if tree is None:
            return None
        tree = tree[key]
    return tree


def reads_body(needs: PathTree | None) -> bool:
    """Does a policy that reads ``needs`` (see policy/input_paths.py; None: everything) read
    ``parsed_body`` or ``truncated_body``? Only then is the body parsed."""
    return needs is None or "parsed_body" in needs or "truncated_body" in needs


def build_input(
    view: RequestView,
    body: BodySettings | None = None,
    needs: PathTree | None = None,
    grpc: ProtosetDecoder | None = None,
    *,
    policy_reads: PathTree | None = None,
) -> dict[str, Any]:
    """The opa-envoy-plugin input document for one request (identity added by the caller).

    ``body`` None or ``parse=False`` leaves out ``parsed_body``/``truncated_body``, as
    opa-envoy-plugin's ``skip-request-body-parse``. ``needs`` (see policy/input_paths.py)
    builds only those parts (None: all); a request the full document refuses for its path or
    query is still refused. The body is parsed only when both ``needs`` and ``policy_reads``
    (what the loaded policies read, when the document is built whole for the decision log or
    without pruning) read it: a body no policy reads costs nothing and is never refused.
    ``grpc`` (the configured protoset) decodes gRPC request messages.
    """
    document = _attributes_document(view, needs)
    path, query = split_path(view.raw_path)
    try:
        document["parsed_path"] = parse_path(path)
        document["parsed_query"] = parse_query(query)
    except UnicodeDecodeError as exc:
        raise InputError("path or query is not valid UTF-8 after decoding") from exc
    wanted = reads_body(needs) and reads_body(policy_reads)
    if body is not None and body.parse and wanted:
        try:
            parsed, truncated = parse_body(
                view.headers,
                view.body,
                view.raw_body,
                limits=body.limits,
                parsed_path=document["parsed_path"],
                grpc=grpc,
            )
        except BodyError as exc:
            raise InputError(str(exc)) from exc
        document["parsed_body"] = parsed
        document["truncated_body"] = truncated
    document["version"] = VERSION
    if view.source_principal:
        document["source_principal"] = view.source_principal
    return prune(document, needs)
