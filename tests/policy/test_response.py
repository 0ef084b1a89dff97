"""response.ok_response fills the CheckResponse in place: the same message as the nested
constructors it replaced (kept below as the reference), byte for byte up to the order of map
entries, which protobuf leaves unspecified (upb's follows a per-process hash seed)."""

from __future__ import annotations

import itertools
from typing import Any

from envoy.config.core.v3.base_pb2 import QueryParameter
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, OkHttpResponse
from google.protobuf.struct_pb2 import Struct
from google.rpc import code_pb2, status_pb2

from sidegate.extauthz.response import denied_response, header_options, ok_response


def constructed_ok_response(
    *,
    headers: Any = (),
    headers_to_remove: Any = (),
    response_headers_to_add: Any = (),
    query_parameters_to_set: Any = (),
    query_parameters_to_remove: Any = (),
    dynamic_metadata: Any = None,
) -> CheckResponse:
    ok = OkHttpResponse(
        headers=header_options(headers),
        headers_to_remove=list(headers_to_remove),
        response_headers_to_add=header_options(response_headers_to_add),
        query_parameters_to_set=[
            QueryParameter(key=k, value=v) for k, v in query_parameters_to_set
        ],
        query_parameters_to_remove=list(query_parameters_to_remove),
    )
    response = CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
    if dynamic_metadata:
        st = Struct()
        st.update(dict(dynamic_metadata))
        response.dynamic_metadata.CopyFrom(st)
    return response


METADATA = [
    None,
    {},
    {"decision_id": "5b0f6c3e-1c9a-4d8e-9a57-000000000000", "tier": "free", "consumer": "c"},
    {"n": 1.5, "b": True, "none": None, "list": [1, "a", {"x": []}], "nested": {"k": {"v": 2}}},
]
ARGUMENTS: list[Any] = [
    lambda: {},
    lambda: {"headers": [("X-User", "u"), ("x-user", "v"), ("x-other", "")]},
    lambda: {"headers_to_remove": ["authorization", "cookie"]},
    lambda: {"response_headers_to_add": [("set-cookie", "a=1"), ("Set-Cookie", "b=2")]},
    lambda: {
        "query_parameters_to_set": [("q", "1"), ("q", "2")],
        "query_parameters_to_remove": ["t"],
    },
    lambda: {
        "headers": (h for h in [("x-gen", "1")]),  # any iterable, as before
        "headers_to_remove": iter(["authorization"]),
        "query_parameters_to_remove": ("token",),
    },
]


def test_ok_response_is_the_constructed_one() -> None:
    for arguments, metadata in itertools.product(ARGUMENTS, METADATA):
        built = ok_response(**arguments(), dynamic_metadata=metadata)
        reference = constructed_ok_response(**arguments(), dynamic_metadata=metadata)
        assert built == reference
        # deterministic: map entries (the Struct's fields) sorted by key; otherwise their order
        # follows upb's per-process hash seed, for either way of building the message
        assert built.SerializeToString(deterministic=True) == reference.SerializeToString(
            deterministic=True
        )
        assert built.HasField("status") and built.HasField("ok_response")
        assert built.WhichOneof("http_response") == "ok_response"


def test_denied_response_metadata_is_unchanged() -> None:
    metadata = {"decision_id": "d", "nested": {"a": [1, None, True]}}
    response = denied_response(403, body="no", dynamic_metadata=metadata)
    st = Struct()
    st.update(metadata)
    assert response.dynamic_metadata == st
