"""Seeded generators of hostile Check traffic: random bytes, mutated valid requests, and
structurally valid CheckRequests with hostile paths, headers and bodies of every content type."""

from __future__ import annotations

import random
from collections.abc import Iterator

from envoy.config.core.v3.base_pb2 import HeaderValue
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

PATHS = [
    "/", "//admin", "///admin/x", "/%zz", "/a/../b", "/%2e%2e/x", "/%2E/x", "/.", "/..",
    "/%00", "/%ff%fe", "/a%2Fb", "/\u00e9\u20ac", "/x?%", "/x?a=%E2%82", "/x?a=1&a=2&b",
    "/x?=&&=", "/x?" + "&".join(["a=1"] * 3000), "/" + "a/" * 3000, "/deny/me", "/hello",
    "", "?", "/x#frag", "/x?q=%2e%2e", "/" + "%41" * 5000, "/x;a=b", "*", "http://h/x",
]
TYPES = [
    "application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ", "multipart/form-data", "multipart/form-data; boundary=",
    'multipart/form-data; boundary="a;b"', "multipart/form-data; boundary=\u20ac",
    "text/plain", "application/grpc", "APPLICATION/JSON", "application/json-patch+json",
    "multipart/form-data; boundary=" + "b" * 300, "application/x-www-form-urlencoded; x=\u00e9",
]
CHARSETS = ["utf-8", "latin-1", "x-bogus", "base64", "rot13", "punycode", "utf-16", "", "\u00e9"]


_POOL = "ab=&%+;:/\\\"'{}[],.-_ \t\r\n\x00\u00e9\u20ac\U0001f600" + "0123456789ABCDEF"


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_POOL, k=n))


def _json(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return rng.choice(
            ["1", "-0", "1e400", "1.5", "true", "null", '"x"', '"\\ud800"', "NaN", "1" * 50]
        )
    if roll < 0.6:
        return "[" + ",".join(_json(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    return "{" + ",".join(
        f'"{_text(rng, 3)!s}":{_json(rng, depth + 1)}'.replace("\n", "") for _ in range(3)
    ) + "}"


def _body(rng: random.Random, content_type: str) -> bytes:
    kind = rng.random()
    if "json" in content_type.lower():
        if kind < 0.06:
            return b"[" * rng.randint(30, 3000) + b"]" * rng.randint(0, 3000)
        if kind < 0.09:
            return b"[" + b",".join([b"0"] * rng.randint(9000, 12000)) + b"]"
        return _json(rng).encode("utf-8", "surrogatepass")
    if "urlencoded" in content_type:
        if kind < 0.06:
            return b"&".join([b"a=%41"] * rng.randint(900, 1100))
        return _text(rng, rng.randint(0, 200)).encode("utf-8", "surrogatepass")
    if "multipart" in content_type:
        parts = []
        for index in range(rng.choice([0, 1, 3, 10, 0, 1, 3, 10, 199, 201])):
            headers = f'Content-Disposition: form-data; name="{_text(rng, 3)}{index}"\r\n'
            if rng.random() < 0.3:
                headers += f"Content-Type: text/plain; charset={rng.choice(CHARSETS)}\r\n"
            if rng.random() < 0.2:
                headers += "Content-Type: application/json\r\n"
            if rng.random() < 0.1:
                headers += "Content-Transfer-Encoding: quoted-printable\r\n"
            if rng.random() < 0.05:
                headers += "".join(f"X-{i}: v\r\n" for i in range(12))
            value = _json(rng) if rng.random() < 0.3 else _text(rng, rng.randint(0, 40))
            parts.append(f"--XyZ\r\n{headers}\r\n{value}\r\n")
        closing = rng.choice(["--XyZ--\r\n", "--XyZ--", "", "--XyZ\r\n", "\r\n--XyZx"])
        return "".join(parts).encode("utf-8", "surrogatepass") + closing.encode()
    return rng.randbytes(rng.randint(0, 300))


def structured(rng: random.Random) -> CheckRequest:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method = rng.choice(["GET", "POST", "PUT", "", "\u00e9", "X" * 100])
    http.path = rng.choice(PATHS) if rng.random() < 0.8 else "/" + _text(rng, rng.randint(0, 60))
    http.host = rng.choice(["api.example.com", "", "\u00e9.example", "h" * 300])
    http.id = _text(rng, rng.randint(0, 10))
    content_type = rng.choice(TYPES)
    headers = {"content-type": content_type}
    for _ in range(rng.choice([0, 1, 5, 100])):
        headers[_text(rng, rng.randint(1, 8)).lower()] = _text(rng, rng.randint(0, 30))
    if rng.random() < 0.3:
        headers["content-length"] = rng.choice(["-1", "abc", "9" * 30, "0", "10", ""])
    if rng.random() < 0.1:
        headers["x-envoy-auth-partial-body"] = rng.choice(["true", "TRUE", "false", "x"])
    if rng.random() < 0.2:
        headers["authorization"] = rng.choice(["Bearer x.y.z", "Basic !!", "Bearer", _text(rng, 9)])
    if rng.random() < 0.1:
        headers["cookie"] = _text(rng, 40)
    body = _body(rng, content_type)
    if rng.random() < 0.2:
        for key, value in headers.items():
            raw = value.encode("utf-8", "surrogatepass")
            if rng.random() < 0.2:
                raw += b"\xff\xfe"
            http.header_map.headers.append(HeaderValue(key=key, raw_value=raw))
    else:
        for key, value in headers.items():
            http.headers[key] = value
    if rng.random() < 0.5:
        http.raw_body = body
    else:
        http.body = body.decode("utf-8", "replace")
    http.size = rng.choice([0, len(body), -1, 2**62])
    if rng.random() < 0.3:
        request.attributes.context_extensions["policy"] = rng.choice(
            ["fuzz/decision", "", "../x", "nope/missing", "a" * 500, "fuzz", "/fuzz/decision/"]
        )
    if rng.random() < 0.2:
        request.attributes.source.principal = _text(rng, 20)
    return request


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if not buf or op < 0.3:
            buf.insert(rng.randint(0, len(buf)), rng.randrange(256))
        elif op < 0.6:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op < 0.75:
            del buf[rng.randrange(len(buf)) :]
        elif op < 0.9:
            start = rng.randrange(len(buf))
            buf[start:start] = buf[start : start + rng.randint(1, 50)]
        else:
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x0A, 0x12, 0x1A, 0x22, 0xFF])
    return bytes(buf)


def messages(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """(kind, serialized message) pairs: a third each of random bytes, mutated valid
    requests and hostile structured requests."""
    rng = random.Random(seed)
    for index in range(count):
        kind = ("random", "mutated", "structured")[index % 3]
        if kind == "random":
            yield kind, rng.randbytes(rng.choice([0, 1, 2, 5, 20, 200, 2000]))
        elif kind == "mutated":
            yield kind, _mutate(rng, structured(rng).SerializeToString())
        else:
            yield kind, structured(rng).SerializeToString()


FUZZ_POLICY = """package fuzz
import rego.v1

default decision := {"allowed": false, "http_status": 403}

decision := {
  "allowed": true,
  "headers": {"x-echo": object.get(input.attributes.request.http.headers, "x-echo", "")},
  "dynamic_metadata": {"body": input.parsed_body, "query": input.parsed_query},
} if {
  not input.truncated_body
  input.parsed_path[0] != "deny"
  input.attributes.request.http.method != "DELETE"
}
"""


def fuzz_policy_dir(directory: str) -> None:
    from pathlib import Path

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / "fuzz.rego").write_text(FUZZ_POLICY)
