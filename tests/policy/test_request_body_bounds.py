"""Issue 9, bounded bodies: caps on parts, fields, JSON values and nesting; hostile bodies get a
BodyError (400) or a result, never another exception. Timing is in bench/body_bench.py."""

from __future__ import annotations

import json
import random
from urllib.parse import parse_qs, quote

import pytest

from bench.body_bench import hostile_bodies
from sidegate.extauthz import request_body
from sidegate.extauthz.request_body import BodyError, BodyLimits, parse_body
from sidegate.extauthz.settings import BodySettings

LIMITS = BodyLimits()
MULTIPART = "multipart/form-data; boundary=XyZ"


def parse(content_type: str, data: bytes, limits: BodyLimits = LIMITS):
    return parse_body({"content-type": content_type}, "", data, limits=limits)


def multipart(*parts: bytes) -> bytes:
    return b"".join(b"--XyZ\r\n" + part + b"\r\n" for part in parts) + b"--XyZ--\r\n"


def field(name: str, value: bytes, headers: bytes = b"") -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n'.encode() + headers + b"\r\n" + value


REFUSED = {
    "multipart: tiny parts filling max_bytes",
    "multipart: delimiter look-alikes in one part",
    "multipart: bogus charset",
    "form: many empty fields",
    "json: wide array of ints",
    "json: wide array of objects",
    "json: deep nesting filling max_bytes",
    "json: one huge number",
}


@pytest.mark.parametrize("case", list(hostile_bodies(LIMITS)), ids=lambda case: case[0])
def test_hostile_bodies_at_max_bytes_are_refused_or_parsed(case):
    name, content_type, data = case
    assert len(data) <= LIMITS.max_bytes
    if name in REFUSED:
        with pytest.raises(BodyError):
            parse(content_type, data)
    else:
        parsed, truncated = parse(content_type, data)
        assert parsed is not None and truncated is False


def test_settings_carry_the_limits():
    settings = BodySettings.model_validate(
        {"max_parts": 3, "max_fields": 4, "max_json_values": 5, "max_depth": 6, "max_bytes": 7}
    )
    assert settings.limits == BodyLimits(
        max_bytes=7, max_parts=3, max_fields=4, max_json_values=5, max_depth=6
    )
    assert BodySettings().limits == BodyLimits()


@pytest.mark.parametrize(
    "charset", ["x-bogus", "base64", "rot13", "hex", "punycode", "idna", "zlib", "\u00e9"]
)
def test_multipart_charset_that_is_no_text_encoding_is_a_body_error(charset):
    header = f"Content-Type: text/plain; charset={charset}\r\n".encode()
    with pytest.raises(BodyError):
        parse(MULTIPART, multipart(field("a", b"hi", header)))


def test_multipart_fields_json_parts_charsets_and_quoted_printable():
    body = multipart(
        field("a", b"one"),
        field("a", b"two"),
        field("j", b'{"x": [1, 2]}', b"Content-Type: application/json\r\n"),
        field("l", "caf\u00e9".encode("latin-1"), b"Content-Type: text/plain; charset=latin-1\r\n"),
        field("q", b"a=3Db", b"Content-Transfer-Encoding: quoted-printable\r\n"),
        field("f", b"file bytes", b"Content-Type: application/octet-stream\r\n"),
        b"Content-Disposition: attachment\r\n\r\nskipped",
    )
    parsed, truncated = parse(MULTIPART, body)
    assert truncated is False
    assert parsed == {
        "a": ["one", "two"],
        "j": [{"x": [1, 2]}],
        "l": ["caf\u00e9"],
        "q": ["a=b"],
        "f": ["file bytes"],
    }


def test_multipart_caps_and_malformed_bodies():
    limits = BodyLimits(max_parts=3)
    three = [field(f"f{i}", b"v") for i in range(3)]
    assert len(parse(MULTIPART, multipart(*three), limits)[0]) == 3
    with pytest.raises(BodyError, match="more than 3 parts"):
        parse(MULTIPART, multipart(*three, field("x", b"v")), limits)
    many_headers = b"".join(b"X-%d: v\r\n" % i for i in range(20))
    bad = [
        multipart(field("a", b"v"))[:-9],  # no closing delimiter
        b"preamble\r\n" + multipart(field("a", b"v")),
        multipart(field("a", b"v", many_headers)),  # python-multipart's header count cap
        multipart(field("a", b"v", b"X-Big: " + b"h" * 10_000 + b"\r\n")),
        multipart(field("j", b"{nope", b"Content-Type: application/json\r\n")),
    ]
    for body in bad:
        with pytest.raises(BodyError):
            parse(MULTIPART, body)
    with pytest.raises(BodyError):
        parse("multipart/form-data", multipart(field("a", b"v")))
    with pytest.raises(BodyError):
        parse("multipart/form-data; boundary=" + "b" * 2000, b"x")
    with pytest.raises(BodyError):
        parse("multipart/form-data; boundary=\u20ac", b"x")


def test_json_parts_share_one_value_budget():
    limits = BodyLimits(max_json_values=10)
    part = field("j", b"[1,2,3,4]", b"Content-Type: application/json\r\n")
    assert parse(MULTIPART, multipart(part, part), limits)[0]["j"] == [[1, 2, 3, 4]] * 2
    with pytest.raises(BodyError, match="more than 10 values"):
        parse(MULTIPART, multipart(part, part, part), limits)


def test_json_caps():
    limits = BodyLimits(max_json_values=100, max_depth=4)
    assert parse("application/json", b"[[[[1]]]]", limits)[0] == [[[[1]]]]
    assert parse("application/json", b'{"a":{"b":{"c":{"d":1}}}}', limits)[0]
    for body in (b"[[[[[1]]]]]", b'{"a":{"b":{"c":{"d":{"e":1}}}}}', b'[{"a":[{"b":[]}]}]'):
        with pytest.raises(BodyError, match="deeper than 4"):
            parse("application/json", body, limits)
    assert len(parse("application/json", b"[" + b",".join([b"1"] * 99) + b"]", limits)[0]) == 99
    with pytest.raises(BodyError, match="more than 100 values"):
        parse("application/json", b"[" + b",".join([b"1"] * 101) + b"]", limits)
    for body in (
        b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"1" * 5000, b"[" * 5000, b"[1e400]",
        b'["\\ud800"]', b'{"\\udfff": 1}',
    ):
        with pytest.raises(BodyError):
            parse("application/json", body)


def test_form_caps_and_escapes():
    limits = BodyLimits(max_fields=3)
    assert parse("application/x-www-form-urlencoded", b"a=1&b=2&c=3", limits)[0] == {
        "a": ["1"], "b": ["2"], "c": ["3"]
    }
    with pytest.raises(BodyError, match="more than 3 fields"):
        parse("application/x-www-form-urlencoded", b"a=1&b=2&c=3&d=4", limits)
    for body in (b"a=%", b"a=%4", b"a=%zz", b"a=%=41", b"a=%\r\nb", b"%%41=1", b"a=%ff", b"b=%C3"):
        with pytest.raises(BodyError):
            parse("application/x-www-form-urlencoded", body)


def test_form_decoding_equals_parse_qs_for_valid_forms():
    """Seeded: the C-speed decoder gives exactly what urllib's parse_qs gives."""
    rng = random.Random(9)
    alphabet = "ab=+%&\u00e9\u20ac;/?# \t\r\n" + "".join(chr(c) for c in range(32, 127))
    for _ in range(500):
        pairs = []
        for _ in range(rng.randint(0, 6)):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            plus = rng.random() < 0.5
            encode = (lambda s: quote(s, safe="").replace("%20", "+")) if plus else (
                lambda s: quote(s, safe="")
            )
            pairs.append(f"{encode(name)}={encode(value)}" if rng.random() < 0.9 else encode(name))
        body = "&".join(pairs)
        if not body:
            continue  # an empty body is no body: parsed_body null
        expected = parse_qs(body, keep_blank_values=True, separator="&")
        got = parse("application/x-www-form-urlencoded", body.encode())[0]
        assert got == expected, body


def test_content_type_dispatch_is_a_table_others_can_extend(monkeypatch):
    def parse_cbor(content_type: str, data: bytes, limits: BodyLimits) -> object:
        return {"cbor": len(data)}

    monkeypatch.setattr(
        request_body, "BODY_PARSERS", [*request_body.BODY_PARSERS, ("application/cbor", parse_cbor)]
    )
    assert parse("application/cbor", b"\x00\x00\x00\x00\x01x") == ({"cbor": 6}, False)
    assert parse("text/plain", b"x") == (None, False)
    with pytest.raises(BodyError):
        parse("application/json; " + "x" * 5000, b"{}")
    assert json.loads(b"{}") == parse("Application/JSON; charset=utf-8", b"{}")[0]
    assert parse("application/json", b'["\\ud83d\\ude00", 1.5]')[0] == ["\U0001f600", 1.5]
