"""The input document's details that the decision table does not reach."""

from __future__ import annotations

import pytest

from sidegate.extauthz.input_document import InputError, build_input, parse_path
from sidegate.extauthz.request_body import BodyError, parse_body
from sidegate.extauthz.request_view import RequestView
from sidegate.extauthz.settings import BodySettings
from tests.policy.helpers import check_request


def document(**kwargs):
    view = RequestView.from_check_request(check_request(**kwargs))
    return build_input(view, BodySettings())


def test_protojson_names_time_and_numbers():
    doc = document(path="/x", size=7)
    attributes = doc["attributes"]
    assert attributes["request"]["time"] == "2023-11-14T22:13:20Z"  # RFC 3339, documented
    assert attributes["source"]["address"]["socketAddress"] == {
        "address": "127.0.0.1",
        "portValue": 40000,
    }
    assert attributes["request"]["http"]["size"] == 7
    assert "contextExtensions" not in attributes  # empty maps are left out, as protojson does
    assert document(path="/x", policy="p/q")["attributes"]["contextExtensions"] == {"policy": "p/q"}


def test_percent_encoded_slash_is_decoded_before_splitting():
    assert parse_path("/a%2Fb") == ["a", "b"]
    assert parse_path("//admin") == ["admin"]


def test_invalid_utf8_after_decoding_is_an_input_error():
    with pytest.raises(InputError):
        document(path="/%ff%fe")


def test_multipart_without_boundary_is_a_body_error():
    with pytest.raises(BodyError):
        parse_body({"content-type": "multipart/form-data"}, "x", b"", max_bytes=100)


def test_deeply_nested_json_is_a_body_error_not_a_crash():
    body = "[" * 100_000 + "]" * 100_000
    with pytest.raises(BodyError):
        parse_body({"content-type": "application/json"}, body, b"", max_bytes=1 << 20)


def test_bad_content_length_is_a_body_error():
    with pytest.raises(BodyError):
        parse_body(
            {"content-type": "application/json", "content-length": "x"}, "{}", b"", max_bytes=99
        )


def test_other_content_types_give_null():
    assert parse_body({"content-type": "text/plain"}, "hi", b"", max_bytes=99) == (None, False)
    assert parse_body({}, "", b"", max_bytes=99) == (None, False)


def test_partial_body_header_wins():
    headers = {"content-type": "application/json", "x-envoy-auth-partial-body": "true"}
    assert parse_body(headers, "{}", b"", max_bytes=99) == (None, True)
    headers["x-envoy-auth-partial-body"] = "false"
    assert parse_body(headers, "{}", b"", max_bytes=99) == ({}, False)
