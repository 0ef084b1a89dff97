"""gRPC request messages in the policy input, as opa-envoy-plugin decodes them (protoset).

The decoder, the input document built from a CheckRequest, the unchanged opa-envoy-plugin-style
policy evaluated on it, the protoset's load errors, and seeded hostile bodies.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from sidegate.extauthz.grpc_body import (
    ProtosetDecoder,
    ProtosetError,
    ProtosetSource,
    is_grpc,
)
from sidegate.extauthz.input_document import InputError, build_input
from sidegate.extauthz.request_view import RequestView
from sidegate.extauthz.settings import BodySettings
from tests.policy.grpc_protoset import SERVICE, Greeter, file_descriptor_set, frame, protoset_bytes

GREETER = Greeter()
POLICY_DIR = Path(__file__).parent / "rego_grpc"
SAY_HELLO = f"/{SERVICE}/SayHello"


def decoder() -> ProtosetDecoder:
    return ProtosetDecoder.from_bytes(protoset_bytes(), "greeter.protoset")


def full_request() -> bytes:
    request = GREETER.HelloRequest(
        name="alice",
        account_id=9_007_199_254_740_993,  # 2**53 + 1: exact only as an integer
        kind=2,
        tags=["a", "b"],
        blob=b"\x00\xff",
        deltas=[-5, 7],
    )
    request.quotas["daily"] = -3
    request.quotas["monthly"] = 12_000_000_000
    request.address.city = "Lyon"
    request.address.lines.add(number=18_446_744_073_709_551_615, text="first")
    request.named_lines["home"].number = 4
    request.sent_at.seconds = 1_700_000_000
    return request.SerializeToString()


def test_a_message_decodes_to_protojson_with_64_bit_integers_as_numbers() -> None:
    decoded = decoder().decode([SERVICE, "SayHello"], frame(full_request()))
    assert decoded.truncated is False
    assert decoded.parsed == {
        "name": "alice",
        "accountId": 9_007_199_254_740_993,
        "kind": "BUSINESS",
        "tags": ["a", "b"],
        "quotas": {"daily": -3, "monthly": 12_000_000_000},
        "address": {"city": "Lyon", "lines": [{"number": 18_446_744_073_709_551_615,
                                                "text": "first"}]},
        "namedLines": {"home": {"number": 4}},
        "sentAt": "2023-11-14T22:13:20Z",
        "blob": "AP8=",
        "deltas": [-5, 7],
    }
    # The input is JSON the engine can take as it is.
    assert json.loads(json.dumps(decoded.parsed)) == decoded.parsed


def test_default_values_are_left_out_as_protojson_does() -> None:
    assert decoder().decode([SERVICE, "SayHello"], frame(b"")).parsed == {}


def test_compressed_frames_are_not_decoded() -> None:
    decoded = decoder().decode([SERVICE, "SayHello"], frame(full_request(), compressed=True))
    assert (decoded.parsed, decoded.truncated) == (None, False)


def test_a_declared_length_beyond_the_bytes_sent_is_truncated() -> None:
    body = frame(full_request())
    decoded = decoder().decode([SERVICE, "SayHello"], body[:-3])
    assert (decoded.parsed, decoded.truncated) == (None, True)


def test_only_the_first_message_of_a_stream_is_read() -> None:
    first = GREETER.HelloRequest(name="first").SerializeToString()
    second = GREETER.HelloRequest(name="second").SerializeToString()
    decoded = decoder().decode([SERVICE, "SayHelloStream"], frame(first) + frame(second))
    assert decoded.parsed == {"name": "first"}


def test_unknown_services_and_methods_give_null() -> None:
    body = frame(full_request())
    assert decoder().decode([SERVICE, "Nope"], body).parsed is None
    assert decoder().decode(["other.Service", "SayHello"], body).parsed is None


@pytest.mark.parametrize(
    "path", [[], [SERVICE], [SERVICE, "SayHello", "x"], ["", SERVICE, "SayHello"]]
)
def test_a_path_that_is_not_service_and_method_is_an_input_error(path: list[str]) -> None:
    with pytest.raises(ValueError, match="invalid parsed path"):
        decoder().decode(path, frame(full_request()))


def test_a_body_shorter_than_a_frame_header_is_an_input_error() -> None:
    with pytest.raises(ValueError, match="shorter than a frame header"):
        decoder().decode([SERVICE, "SayHello"], b"\x00\x00\x00")


def test_bytes_that_are_not_the_input_type_are_an_input_error() -> None:
    with pytest.raises(ValueError, match="does not decode"):
        decoder().decode([SERVICE, "SayHello"], frame(b"\x0a\xff\xff\xff\xff\x0f"))


@pytest.mark.parametrize(
    ("content_type", "grpc"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("Application/GRPC; charset=utf-8", True),
        ("application/grpc-web", False),
        ("application/grpc-web+proto", False),
        ("application/json", False),
        ("", False),
    ],
)
def test_which_content_types_are_grpc(content_type: str, grpc: bool) -> None:
    assert is_grpc(content_type) is grpc


# -- the input document -------------------------------------------------------------------


def check_request(
    path: str, body: bytes, content_type: str = "application/grpc", headers: dict | None = None
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = path
    http.headers["content-type"] = content_type
    http.headers.update(headers or {})
    http.raw_body = body
    return request


def input_for(request: external_auth_pb2.CheckRequest, **body: object) -> dict:
    view = RequestView.from_check_request(request)
    return build_input(view, BodySettings(**body), grpc=decoder())


def test_the_input_document_carries_the_decoded_message() -> None:
    document = input_for(check_request(SAY_HELLO, frame(full_request())))
    assert document["parsed_path"] == [SERVICE, "SayHello"]
    assert document["parsed_body"]["name"] == "alice"
    assert document["truncated_body"] is False


def test_envoys_partial_body_header_means_truncated() -> None:
    request = check_request(
        SAY_HELLO, frame(full_request())[:20], headers={"x-envoy-auth-partial-body": "true"}
    )
    document = input_for(request)
    assert (document["parsed_body"], document["truncated_body"]) == (None, True)


def test_a_body_over_max_bytes_is_not_decoded() -> None:
    document = input_for(check_request(SAY_HELLO, frame(full_request())), max_bytes=10)
    assert (document["parsed_body"], document["truncated_body"]) == (None, True)


def test_without_raw_bytes_or_protoset_the_body_is_null() -> None:
    # Envoy without pack_as_bytes sends the body as a UTF-8 string: no message can be read.
    request = check_request(SAY_HELLO, b"")
    request.attributes.request.http.body = "\x00\x00\x00\x00\x02\x0a\x00"
    assert input_for(request)["parsed_body"] is None
    view = RequestView.from_check_request(check_request(SAY_HELLO, frame(full_request())))
    assert build_input(view, BodySettings())["parsed_body"] is None


def test_a_wrong_path_shape_is_the_input_error() -> None:
    with pytest.raises(InputError, match="invalid parsed path"):
        input_for(check_request("/greeter.v1.Greeter/SayHello/extra", frame(full_request())))


def test_a_non_grpc_request_on_the_same_route_is_parsed_as_before() -> None:
    request = check_request("/public", b'{"name": "x"}', content_type="application/json")
    assert input_for(request)["parsed_body"] == {"name": "x"}


# -- the policy, as written for opa-envoy-plugin -------------------------------------------


@pytest.fixture(scope="module")
def engine():
    from sidegate.extauthz.policy.embedded import EmbeddedEngine

    engine = EmbeddedEngine(POLICY_DIR)
    engine.load()
    return engine


def decide(engine, request: external_auth_pb2.CheckRequest) -> bool:
    document = input_for(request)
    result = engine.evaluate_json("envoy/authz/allow", json.dumps(document))
    return result.value is True


def hello(name: str, kind: int = 0, method: str = "SayHello") -> external_auth_pb2.CheckRequest:
    body = GREETER.HelloRequest(name=name, kind=kind).SerializeToString()
    return check_request(f"/{SERVICE}/{method}", frame(body))


def test_the_policy_allows_listed_names_only(engine) -> None:
    assert decide(engine, hello("alice"))
    assert decide(engine, hello("bob"))
    assert not decide(engine, hello("mallory"))
    assert not decide(engine, check_request(SAY_HELLO, frame(b"", compressed=True)))


def test_the_policy_reads_enums_by_name(engine) -> None:
    assert decide(engine, hello("anyone", kind=2, method="SayHelloStream"))
    assert not decide(engine, hello("anyone", kind=1, method="SayHelloStream"))


# -- the protoset file --------------------------------------------------------------------


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ProtosetError, match=r"missing\.protoset: cannot read protoset"):
        ProtosetDecoder.load(tmp_path / "missing.protoset")


def test_a_file_that_is_not_a_protoset_names_it(tmp_path: Path) -> None:
    path = tmp_path / "api.protoset"
    path.write_bytes(b"\xff\xff\xff not a descriptor set")
    with pytest.raises(ProtosetError, match=r"api\.protoset: not a protoset"):
        ProtosetDecoder.load(path)
    path.write_bytes(b"")
    with pytest.raises(ProtosetError, match="describes no files"):
        ProtosetDecoder.load(path)


def test_a_protoset_without_its_imports_is_refused(tmp_path: Path) -> None:
    files = file_descriptor_set()
    del files.file[0]  # google/protobuf/timestamp.proto
    path = tmp_path / "api.protoset"
    path.write_bytes(files.SerializeToString())
    with pytest.raises(ProtosetError, match="--include_imports"):
        ProtosetDecoder.load(path)


def test_files_may_come_in_any_order() -> None:
    files = file_descriptor_set()
    files.file.reverse()
    decoded = ProtosetDecoder(files, "reordered").decode([SERVICE, "SayHello"], frame(b""))
    assert decoded.parsed == {}


def test_a_reload_keeps_the_running_set_when_the_file_breaks(tmp_path: Path) -> None:
    path = tmp_path / "api.protoset"
    path.write_bytes(protoset_bytes())
    source = ProtosetSource(path)
    first = source.current
    path.write_bytes(b"garbage")
    assert source.reload() is False
    assert source.current is first
    path.write_bytes(protoset_bytes())
    assert source.reload() is True
    assert source.current is not first


# -- hostile bodies -----------------------------------------------------------------------


def test_seeded_hostile_bodies_are_decoded_refused_or_null_never_an_exception() -> None:
    """Random and mutated frames: every outcome is a value, null, truncated or an input error."""
    rng = random.Random(15)
    valid = frame(full_request())
    the_decoder = decoder()
    outcomes = {"decoded": 0, "null": 0, "truncated": 0, "refused": 0}
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.4:
            body = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind < 0.6:
            body = bytearray(valid[: rng.randrange(len(valid))])
        elif kind < 0.8:
            body = bytearray(rng.randbytes(rng.randint(0, 300)))
        else:
            # A nesting bomb: address.lines[0].children[0].children[0]... (Line is recursive).
            chain = b""
            for _ in range(rng.randint(50, 3000)):
                chain = b"\x1a" + _varint(len(chain)) + chain
            address = b"\x12" + _varint(len(chain)) + chain
            body = bytearray(frame(b"\x32" + _varint(len(address)) + address))
        try:
            decoded = the_decoder.decode([SERVICE, "SayHello"], bytes(body))
        except ValueError:
            outcomes["refused"] += 1
            continue
        if decoded.truncated:
            outcomes["truncated"] += 1
        elif decoded.parsed is None:
            outcomes["null"] += 1
        else:
            json.dumps(decoded.parsed)
            outcomes["decoded"] += 1
    assert all(count > 0 for count in outcomes.values()), outcomes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_check_config_reads_the_protoset_and_names_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidegate.cli import main

    protoset = tmp_path / "api.protoset"
    protoset.write_bytes(protoset_bytes())
    config = tmp_path / "sidegate.yaml"
    config.write_text(
        f"authz:\n  policy:\n    directory: {POLICY_DIR}\n"
        "    body:\n      proto_descriptor: api.protoset\n"
        "ratelimit:\n  enabled: false\n"
    )
    assert main(["check-config", str(config)]) == 0
    protoset.write_bytes(b"\x0a\x05broken")
    assert main(["check-config", str(config)]) != 0
    err = capsys.readouterr().err
    assert "authz.policy.body.proto_descriptor: " in err and f"{protoset}: not a protoset" in err
