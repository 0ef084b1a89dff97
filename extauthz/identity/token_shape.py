"""Which credentials an identity source claims: JWT-shaped tokens, the others, or any.

A JWT source and an introspection source can share ``Authorization: Bearer``: the JWT source
claims only tokens that look like a JWS in compact form, the introspection source the rest.
The test runs on every request on attacker-controlled input, so it is bounded: it counts the
dots (``str.find``, C speed) and decodes only the JOSE header, at most ``MAX_SHAPE_HEADER_CHARS``
characters, to see a JSON object with a string ``alg``. The payload and signature are never
decoded or scanned here; the JWT verifier does that.
Hand-written rather than ``jwt.get_unverified_header``: PyJWT would decode without our size
cap and raise for reasons (padding, kid type) that must not move a token to another source.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Literal

# jwt: JWT-shaped tokens only; opaque: everything that is not JWT-shaped; any: every credential
Shape = Literal["any", "jwt", "opaque"]

# 4096 base64url characters are a 3 KiB JOSE header, well above any real one (and above the
# JWT source's own default max_header_bytes of 1 KiB, which then rejects it as too_large)
MAX_SHAPE_HEADER_CHARS = 4096
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

# JOSE header segments already seen to be JWT-shaped. Every token of one issuer and key repeats
# the same header, and decoding it (base64 + json) was ~3 µs of each Check (21 µs under
# cProfile); a set lookup is ~0.1 µs. Only positive answers are kept: a JOSE header is public by
# design (alg, kid, typ), while the first segment of a credential that is *not* JWT-shaped may
# be part of an opaque secret, so it is never stored. Bounded: emptied when full, so a flood of
# made-up headers costs what it cost before (one decode each), never memory.
MAX_REMEMBERED_HEADERS = 256
_jose_headers: set[str] = set()


def is_jwt_shaped(token: str) -> bool:
    """Three dot-separated segments, the first a base64url JSON object with a string ``alg``
    and the second non-empty. JWE (five segments) and anything else is not JWT-shaped.

    The payload and signature are not looked at: a token with a JOSE header is meant as a
    JWT, and the JWT source rejects a broken rest (so it is never offered to introspection).
    The header is sliced out without splitting the whole token, so a huge credential costs
    one C-level scan for dots (Envoy bounds header sizes; 60 KiB by default).
    """
    end = token.find(".", 0, MAX_SHAPE_HEADER_CHARS + 1)
    if end <= 0 or token[end + 1 : end + 2] in ("", "."):
        return False
    # exactly two dots; str.find is a memchr-speed scan (str.count is several times slower)
    second = token.find(".", end + 2)
    if second < 0 or token.find(".", second + 1) >= 0:
        return False
    header = token[:end]
    if header in _jose_headers:
        return True
    if not _is_jose_header(header):
        return False
    if len(_jose_headers) >= MAX_REMEMBERED_HEADERS:
        _jose_headers.clear()
    _jose_headers.add(header)
    return True


def _is_jose_header(header: str) -> bool:
    """A base64url JSON object with a string ``alg`` (``header`` is at most the size cap)."""
    if not _B64URL.fullmatch(header):
        return False
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return False
    return isinstance(decoded, dict) and isinstance(decoded.get("alg"), str)


def claims(shape: Shape, credential: str) -> bool:
    """Whether a source of this ``shape`` takes this (located) credential."""
    if shape == "any":
        return True
    return is_jwt_shaped(credential) == (shape == "jwt")
