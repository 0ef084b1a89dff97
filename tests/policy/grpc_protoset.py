"""A protoset for the gRPC body tests, as ``protoc --descriptor_set_out --include_imports`` writes.

Built in code (no protoc needed): the Greeter service below, with nested messages, an enum,
repeated fields, a map, 64-bit integers, bytes and an imported well-known type::

    syntax = "proto3";
    package greeter.v1;
    import "google/protobuf/timestamp.proto";
    message Line { uint64 number = 1; string text = 2; repeated Line children = 3; }
    message HelloRequest {
      enum Kind { KIND_UNSPECIFIED = 0; PERSONAL = 1; BUSINESS = 2; }
      message Address { string city = 1; repeated Line lines = 2; }
      string name = 1;  int64 account_id = 2;  Kind kind = 3;  repeated string tags = 4;
      map<string, int64> quotas = 5;  Address address = 6;
      google.protobuf.Timestamp sent_at = 7;  bytes blob = 8;  repeated sint64 deltas = 9;
      map<string, Line> named_lines = 10;
    }
    message HelloReply { string message = 1; }
    service Greeter {
      rpc SayHello(HelloRequest) returns (HelloReply);
      rpc SayHelloStream(stream HelloRequest) returns (HelloReply);
    }
"""

from __future__ import annotations

import struct

from google.protobuf import descriptor_pb2, message_factory, text_format, timestamp_pb2
from google.protobuf.descriptor_pool import DescriptorPool

GREETER_PROTO = """
name: "greeter/v1/greeter.proto"
package: "greeter.v1"
dependency: "google/protobuf/timestamp.proto"
syntax: "proto3"
message_type {
  name: "Line"
  field { name: "number" number: 1 label: LABEL_OPTIONAL type: TYPE_UINT64 json_name: "number" }
  field { name: "text" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "text" }
  field { name: "children" number: 3 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".greeter.v1.Line" json_name: "children" }
}
message_type {
  name: "HelloRequest"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "name" }
  field { name: "account_id" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64
          json_name: "accountId" }
  field { name: "kind" number: 3 label: LABEL_OPTIONAL type: TYPE_ENUM
          type_name: ".greeter.v1.HelloRequest.Kind" json_name: "kind" }
  field { name: "tags" number: 4 label: LABEL_REPEATED type: TYPE_STRING json_name: "tags" }
  field { name: "quotas" number: 5 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".greeter.v1.HelloRequest.QuotasEntry" json_name: "quotas" }
  field { name: "address" number: 6 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".greeter.v1.HelloRequest.Address" json_name: "address" }
  field { name: "sent_at" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".google.protobuf.Timestamp" json_name: "sentAt" }
  field { name: "blob" number: 8 label: LABEL_OPTIONAL type: TYPE_BYTES json_name: "blob" }
  field { name: "deltas" number: 9 label: LABEL_REPEATED type: TYPE_SINT64 json_name: "deltas" }
  field { name: "named_lines" number: 10 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".greeter.v1.HelloRequest.NamedLinesEntry" json_name: "namedLines" }
  nested_type {
    name: "QuotasEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 json_name: "value" }
    options { map_entry: true }
  }
  nested_type {
    name: "NamedLinesEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".greeter.v1.Line" json_name: "value" }
    options { map_entry: true }
  }
  nested_type {
    name: "Address"
    field { name: "city" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "city" }
    field { name: "lines" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE
            type_name: ".greeter.v1.Line" json_name: "lines" }
  }
  enum_type {
    name: "Kind"
    value { name: "KIND_UNSPECIFIED" number: 0 }
    value { name: "PERSONAL" number: 1 }
    value { name: "BUSINESS" number: 2 }
  }
}
message_type {
  name: "HelloReply"
  field { name: "message" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "message" }
}
service {
  name: "Greeter"
  method { name: "SayHello" input_type: ".greeter.v1.HelloRequest"
           output_type: ".greeter.v1.HelloReply" }
  method { name: "SayHelloStream" input_type: ".greeter.v1.HelloRequest"
           output_type: ".greeter.v1.HelloReply" client_streaming: true }
}
"""

SERVICE = "greeter.v1.Greeter"


def file_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Imports first, as protoc writes them."""
    files = descriptor_pb2.FileDescriptorSet()
    timestamp = files.file.add()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    text_format.Parse(GREETER_PROTO, files.file.add())
    return files


def protoset_bytes() -> bytes:
    return file_descriptor_set().SerializeToString()


class Greeter:
    """The client side: message classes from the same descriptors, and gRPC framing."""

    def __init__(self) -> None:
        pool = DescriptorPool()
        for file_proto in file_descriptor_set().file:
            pool.Add(file_proto)
        self.HelloRequest = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("greeter.v1.HelloRequest")
        )
        self.HelloReply = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("greeter.v1.HelloReply")
        )


def frame(message: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    """One length-prefixed gRPC message (flag byte, 4-byte big-endian length, bytes)."""
    length = len(message) if declared is None else declared
    return struct.pack(">BI", 1 if compressed else 0, length) + message
