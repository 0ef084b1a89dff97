"""``parsed_body`` for gRPC requests: the first message, decoded with a protoset.

opa-envoy-plugin's ``proto-descriptor``: with Envoy sending the body as bytes
(``with_request_body`` + ``pack_as_bytes: true``), an ``application/grpc`` request's first
length-prefixed message is decoded as the input type of the method its path names
(``/package.Service/Method``) and given to the policy in its protojson form.

Rules (as opa-envoy-plugin's ``getGRPCBody``, differences marked):

- the path must be exactly ``[service, method]``, else the input error "invalid parsed path";
- fewer than 5 bytes (no complete frame header) is an input error;
- a compressed frame (flag byte set) is not decoded: ``parsed_body`` null;
- a declared message length beyond the bytes Envoy sent means ``truncated_body`` true;
- an unknown service or method gives ``parsed_body`` null;
- bytes that do not decode as the input type are an input error;
- client-streaming methods: the first message is decoded (opa-envoy-plugin gives null);
- protojson names (lowerCamelCase ``json_name``), enums by name, bytes in base64, fields at
  their default value left out; 64-bit integers are JSON numbers, the choice sidegate made for
  the CheckRequest (protojson writes strings; opa-envoy-plugin follows protojson here).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from sidegate.extauthz.errors import AuthzConfigError

log = structlog.get_logger("sidegate.policy")

FRAME_HEADER = struct.Struct(">BI")
COMPRESSED_FLAG = 0x01

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)


class ProtosetError(AuthzConfigError):
    """The protoset file cannot be read or does not describe a consistent set of files."""


class GrpcBodyError(ValueError):
    """The request cannot be read as the gRPC call it claims to be (an input error: 400)."""


@dataclass(frozen=True)
class GrpcBody:
    parsed: Any
    truncated: bool


NOT_DECODED = GrpcBody(None, False)


def is_grpc(content_type: str) -> bool:
    """``application/grpc``, ``application/grpc+proto``, ...; not ``application/grpc-web``."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/grpc" or media.startswith("application/grpc+")


class ProtosetDecoder:
    """Method input types of the services a protoset describes; decodes first messages."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet, source: str) -> None:
        self.source = source
        self._pool = descriptor_pool.DescriptorPool()
        for file_proto in _dependency_order(files, source):
            try:
                self._pool.Add(file_proto)
            except Exception as exc:  # the upb and python pools raise different types
                raise ProtosetError(
                    f"{source}: {file_proto.name}: not a valid file descriptor: {exc}"
                ) from None
        self._inputs: dict[tuple[str, str], Descriptor] = {}
        for file_proto in files.file:
            prefix = f"{file_proto.package}." if file_proto.package else ""
            for service in file_proto.service:
                described = self._pool.FindServiceByName(prefix + service.name)
                for method in described.methods:
                    self._inputs[(described.full_name, method.name)] = method.input_type
        self.methods = len(self._inputs)

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> ProtosetDecoder:
        files = descriptor_pb2.FileDescriptorSet()
        try:
            files.ParseFromString(data)
        except DecodeError:
            raise ProtosetError(
                f"{source}: not a protoset (expected the output of "
                "'protoc --descriptor_set_out=FILE --include_imports')"
            ) from None
        if not files.file:
            raise ProtosetError(f"{source}: the protoset describes no files")
        return cls(files, source)

    @classmethod
    def load(cls, path: Path) -> ProtosetDecoder:
        """Read and check a protoset (a file read and a compile: call it off the event loop)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProtosetError(f"{path}: cannot read protoset: {exc.strerror}") from None
        return cls.from_bytes(data, str(path))

    def input_type(self, service: str, method: str) -> Descriptor | None:
        return self._inputs.get((service, method))

    def decode(self, parsed_path: list[str], raw_body: bytes) -> GrpcBody:
        """The policy's view of one gRPC request body (see the module docstring)."""
        if len(parsed_path) != 2:
            raise GrpcBodyError("invalid parsed path")
        if len(raw_body) < FRAME_HEADER.size:
            raise GrpcBodyError("gRPC body shorter than a frame header")
        flags, length = FRAME_HEADER.unpack_from(raw_body)
        if flags & COMPRESSED_FLAG:
            return NOT_DECODED
        if length > len(raw_body) - FRAME_HEADER.size:
            return GrpcBody(None, True)
        input_type = self.input_type(parsed_path[0], parsed_path[1])
        if input_type is None:
            return NOT_DECODED
        payload = raw_body[FRAME_HEADER.size : FRAME_HEADER.size + length]
        message = message_factory.GetMessageClass(input_type)()
        try:
            message.ParseFromString(payload)
            return GrpcBody(_to_input(message, self._pool), False)
        except (DecodeError, RecursionError) as exc:
            raise GrpcBodyError(f"gRPC message does not decode: {type(exc).__name__}") from exc
        except (TypeError, ValueError) as exc:
            # An Any whose type the protoset lacks, a map key protojson cannot write, ...
            raise GrpcBodyError(f"gRPC message has no JSON form: {type(exc).__name__}") from exc


def _dependency_order(
    files: descriptor_pb2.FileDescriptorSet, source: str
) -> list[descriptor_pb2.FileDescriptorProto]:
    """Files before the files that import them (protoc writes them so; a hand-made set may not)."""
    by_name = {f.name: f for f in files.file}
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    state: dict[str, str] = {}
    for root in by_name:
        if root in state:
            continue
        # Iterative depth-first walk: a protoset is outside input, so no recursion limit to hit.
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = "open"
        while stack:
            name, index = stack.pop()
            deps = by_name[name].dependency
            if index < len(deps):
                stack.append((name, index + 1))
                dep = deps[index]
                if dep not in by_name:
                    raise ProtosetError(
                        f"{source}: {name} imports {dep}, which the protoset does not contain "
                        "(write it with --include_imports)"
                    )
                if state.get(dep) == "open":
                    raise ProtosetError(f"{source}: import cycle through {dep}")
                if dep not in state:
                    state[dep] = "open"
                    stack.append((dep, 0))
            else:
                state[name] = "done"
                ordered.append(by_name[name])
    return ordered


def _to_input(message: Message, pool: descriptor_pool.DescriptorPool) -> dict[str, Any]:
    document = MessageToDict(message, descriptor_pool=pool)
    _int64_as_numbers(message, document)
    return document


def _int64_as_numbers(message: Message, document: dict[str, Any]) -> None:
    """protojson's 64-bit integer strings become numbers, wherever they are in the message."""
    if message.DESCRIPTOR.full_name.startswith("google.protobuf."):
        return  # well-known types have their own JSON form (Int64Value stays as protojson has it)
    for field, value in message.ListFields():
        key = field.json_name
        if key not in document:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for map_key, item in value.items():
                json_key = _map_key(map_key)
                if value_field.type in _INT64_TYPES:
                    document[key][json_key] = int(item)
                elif value_field.message_type is not None:
                    _int64_as_numbers(item, document[key][json_key])
        elif field.type in _INT64_TYPES:
            document[key] = [int(v) for v in value] if field.is_repeated else int(value)
        elif field.message_type is not None:
            if field.is_repeated:
                for item, item_doc in zip(value, document[key], strict=True):
                    _int64_as_numbers(item, item_doc)
            else:
                _int64_as_numbers(value, document[key])


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class ProtosetSource:
    """The configured protoset, reloaded with the policies; a bad file keeps the running one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = ProtosetDecoder.load(path)

    def reload(self) -> bool:
        try:
            decoder = ProtosetDecoder.load(self.path)
        except ProtosetError as exc:
            log.warning("protoset_reload_failed", file=str(self.path), error=str(exc))
            return False
        self.current = decoder  # one reference swap: a Check sees the old or the new set
        log.info("protoset_loaded", file=str(self.path), methods=decoder.methods)
        return True
