"""A policy in the style of opa-envoy-plugin's documentation runs unchanged on both engines.

It reads only opa-envoy-plugin's input (``attributes``, ``parsed_body``), decodes the JWT in
Rego (``io.jwt.decode``, ``io.jwt.verify_hs256``) and is written in Rego v0 syntax.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest

from tests.policy.helpers import check_request, status_of

DOCS_DIR = Path(__file__).parent / "rego_docs"
SECRET = "a-shared-secret-of-at-least-32-bytes"


def token(role: str, name: str, *, secret: str = SECRET, exp_in: int = 3600) -> str:
    now = int(time.time())
    sub = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    claims = {"role": role, "sub": sub, "nbf": now - 60, "exp": now + exp_in}
    return jwt.encode(claims, secret, algorithm="HS256")


def request(method: str, path: str, bearer: str, body: dict[str, str] | None = None):
    headers = {"authorization": f"Bearer {bearer}"}
    text = None
    if body is not None:
        text = json.dumps(body)
        headers["content-type"] = "application/json"
    return check_request(path, method=method, headers=headers, body=text)


CASES = [
    ("guest reads people", "GET", "/people", token("guest", "alice"), None, 200),
    ("guest cannot read one person", "GET", "/people/1", token("guest", "alice"), None, 403),
    ("guest cannot create", "POST", "/people", token("guest", "alice"), {"firstname": "C"}, 403),
    ("admin reads people", "GET", "/people", token("admin", "bob"), None, 200),
    ("admin reads one person", "GET", "/people/1", token("admin", "bob"), None, 200),
    ("admin creates someone", "POST", "/people", token("admin", "bob"), {"firstname": "C"}, 200),
    (
        "admin cannot create self",
        "POST",
        "/people",
        token("admin", "bob"),
        {"firstname": "Bob"},
        403,
    ),
    ("wrong signature", "GET", "/people", token("guest", "a", secret="x" * 32), None, 403),
    ("expired token", "GET", "/people", token("guest", "alice", exp_in=-30), None, 403),
    ("not a JWT", "GET", "/people", "not-a-jwt", None, 403),
]


@pytest.mark.parametrize(
    ("method", "path", "bearer", "body", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_documented_answers(make_service, method, path, bearer, body, expected):
    service = await make_service(directory=DOCS_DIR, default_path="envoy/authz/allow")
    response = await service.check(request(method, path, bearer, body))
    assert status_of(response) == expected
