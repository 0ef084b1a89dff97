"""One table of cases, run against both engines: the embedded one and remote OPA (stand-in).

Each case selects a rule of ``rego/cases.rego`` through context_extensions ``policy`` and checks
the CheckResponse Envoy would receive.
"""

from __future__ import annotations

import json

import pytest
from google.rpc import code_pb2

from sidegate.extauthz.service import CheckError
from tests.policy.helpers import (
    check_request,
    echoed,
    headers_of,
    metadata_of,
    status_of,
    upstream_headers,
)


async def test_bool_true_allows(make_service):
    service = await make_service()
    response = await service.check(check_request(policy="cases/allow_true"))
    assert response.status.code == code_pb2.OK
    meta = metadata_of(response)
    assert meta["decision_id"] and meta["tier"] == "default" and meta["consumer"] == "anonymous"


async def test_bool_false_denies_403_with_decision_id(make_service):
    service = await make_service()
    response = await service.check(check_request(policy="cases/allow_false"))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert status_of(response) == 403
    assert metadata_of(response)["decision_id"]


async def test_full_allow_maps_every_key(make_service):
    service = await make_service()
    response = await service.check(check_request(policy="cases/full_allow"))
    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    assert headers_of(ok.headers) == [
        ("x-added", "yes", False),
        ("x-multi", "a", False),
        ("x-multi", "b", True),
    ]
    assert headers_of(ok.response_headers_to_add) == [("x-resp", "1", False), ("x-resp", "2", True)]
    assert list(ok.headers_to_remove) == ["x-secret", "x-other"]
    assert [(q.key, q.value) for q in ok.query_parameters_to_set] == [
        ("q", "1"),
        ("q", "2"),
        ("single", "s"),
    ]
    assert list(ok.query_parameters_to_remove) == ["drop"]
    meta = metadata_of(response)
    assert meta["team"] == "core"
    assert meta["tier"] == "gold"  # a policy may set the tier the rate limiter sees
    assert meta["decision_id"]


async def test_custom_deny_status_body_and_repeated_headers(make_service):
    service = await make_service()
    response = await service.check(check_request(policy="cases/custom_deny"))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 401
    assert json.loads(denied.body) == {"error": "nope"}
    assert headers_of(denied.headers) == [
        ("content-type", "application/json", False),
        # A deny sends every value as an overwrite: Envoy then keeps them all.
        ("set-cookie", "a=1", False),
        ("set-cookie", "b=2", False),
    ]
    meta = metadata_of(response)
    assert meta["why"] == "test" and meta["decision_id"]


async def test_deny_ignores_allow_only_keys(make_service):
    service = await make_service()
    response = await service.check(check_request(policy="cases/deny_with_allow_keys"))
    assert status_of(response) == 403
    assert not response.HasField("ok_response")
    assert list(response.denied_response.headers) == []


async def test_object_deny_defaults_to_403(make_service):
    service = await make_service()
    response = await service.check(check_request(policy="cases/deny_object"))
    assert status_of(response) == 403
    assert response.denied_response.body == ""


@pytest.mark.parametrize(
    "rule",
    [
        "undefined_rule",
        "no_such_rule",
        "conflict",
        "allowed_number",
        "remove_string",
        "bad_status",
        "string_result",
        "missing_allowed",
    ],
)
async def test_no_usable_decision_is_denied_by_default(make_service, rule):
    service = await make_service()
    response = await service.check(check_request(policy=f"cases/{rule}"))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert status_of(response) == 403
    assert response.denied_response.body == ""  # nothing internal reaches the client
    assert metadata_of(response)["decision_id"]


@pytest.mark.parametrize("rule", ["undefined_rule", "conflict", "allowed_number"])
async def test_no_usable_decision_as_503(make_service, rule):
    service = await make_service(on_error="unavailable")
    response = await service.check(check_request(policy=f"cases/{rule}"))
    assert response.status.code == code_pb2.UNAVAILABLE
    assert status_of(response) == 503


@pytest.mark.parametrize("rule", ["undefined_rule", "conflict", "remove_string"])
async def test_no_usable_decision_as_grpc_error(make_service, rule):
    service = await make_service(on_error="grpc_error")
    with pytest.raises(CheckError):
        await service.check(check_request(policy=f"cases/{rule}"))


async def test_default_path_used_without_context_extension(make_service):
    service = await make_service(default_path="cases/allow_false")
    assert status_of(await service.check(check_request())) == 403
    service = await make_service(default_path="/cases/allow_true/")
    assert status_of(await service.check(check_request())) == 200


async def test_context_extension_overrides_default_path(make_service):
    service = await make_service(default_path="cases/allow_false")
    response = await service.check(check_request(policy="cases/allow_true"))
    assert status_of(response) == 200


async def test_dry_run_turns_a_deny_into_a_bare_allow(make_service):
    service = await make_service(dry_run_paths=["cases/dry_run_deny"])
    response = await service.check(check_request(policy="cases/dry_run_deny"))
    assert response.status.code == code_pb2.OK
    assert list(response.ok_response.headers) == []
    assert metadata_of(response)["decision_id"]
    # Only the listed path runs dry.
    assert status_of(await service.check(check_request(policy="cases/custom_deny"))) == 401


async def test_dry_run_keeps_an_allow_and_does_not_mask_errors(make_service):
    service = await make_service(dry_run=True)
    response = await service.check(check_request(policy="cases/full_allow"))
    assert upstream_headers(response)["x-added"] == "yes"
    assert status_of(await service.check(check_request(policy="cases/conflict"))) == 403


# --- the input document, as the policy sees it -------------------------------------------


async def test_json_body_is_parsed(make_service):
    service = await make_service()
    body = json.dumps({"user": "alice", "n": [1, 2]})
    request = check_request(
        "/orders",
        method="POST",
        headers={"content-type": "application/json", "content-length": str(len(body))},
        body=body,
        policy="cases/echo",
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-body") == {"user": "alice", "n": [1, 2]}
    assert echoed(response, "x-truncated-body") is False


async def test_form_body_is_parsed(make_service):
    service = await make_service()
    request = check_request(
        "/f",
        method="POST",
        headers={"content-type": "application/x-www-form-urlencoded"},
        body="a=1&a=2&b=x%20y",
        policy="cases/echo",
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-body") == {"a": ["1", "2"], "b": ["x y"]}


async def test_multipart_body_is_parsed(make_service):
    service = await make_service()
    body = (
        "--XyZ\r\n"
        'Content-Disposition: form-data; name="name"\r\n\r\n'
        "alice\r\n"
        "--XyZ\r\n"
        'Content-Disposition: form-data; name="meta"\r\n'
        "Content-Type: application/json\r\n\r\n"
        '{"k": true}\r\n'
        "--XyZ--\r\n"
    )
    request = check_request(
        "/upload",
        method="POST",
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
        raw_body=body.encode(),
        policy="cases/echo",
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-body") == {"name": ["alice"], "meta": [{"k": True}]}


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json", "content-length": "1000"},
        {"content-type": "application/json", "x-envoy-auth-partial-body": "true"},
    ],
)
async def test_truncated_body_is_not_parsed(make_service, headers):
    service = await make_service()
    request = check_request(
        "/t", method="POST", headers=headers, body='{"a": 1', policy="cases/echo"
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-body") is None
    assert echoed(response, "x-truncated-body") is True


async def test_malformed_json_body_is_a_clean_400(make_service):
    service = await make_service()
    request = check_request(
        "/t",
        method="POST",
        headers={"content-type": "application/json"},
        body='{"a": 1,,}',
        policy="cases/echo",
    )
    response = await service.check(request)
    assert status_of(response) == 400
    assert response.denied_response.body == "bad request"
    assert metadata_of(response)["decision_id"]


async def test_body_parsing_can_be_switched_off(make_service):
    service = await make_service(body={"parse": False})
    request = check_request(
        "/t",
        method="POST",
        headers={"content-type": "application/json"},
        body="not json at all",
        policy="cases/echo",
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-body") == "absent"
    assert echoed(response, "x-truncated-body") == "absent"


async def test_body_over_the_cap_is_treated_as_truncated(make_service):
    service = await make_service(body={"max_bytes": 8})
    request = check_request(
        "/t",
        method="POST",
        headers={"content-type": "application/json"},
        body='{"long": "enough to exceed"}',
        policy="cases/echo",
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-body") is None
    assert echoed(response, "x-truncated-body") is True


@pytest.mark.parametrize(
    ("path", "parsed"),
    [
        ("//admin/dashboard", ["admin", "dashboard"]),
        ("///admin", ["admin"]),
        ("/a%2Fb/c", ["a", "b", "c"]),
        ("/caf%C3%A9", ["café"]),
        ("/", [""]),
        ("/x/", ["x", ""]),
    ],
)
async def test_parsed_path(make_service, path, parsed):
    service = await make_service()
    response = await service.check(check_request(path, policy="cases/echo"))
    assert echoed(response, "x-parsed-path") == parsed


@pytest.mark.parametrize("path", ["/public/../admin", "/a/%2E%2E/admin", "/./x", "/bad%zz"])
async def test_dot_segments_and_bad_escapes_are_refused(make_service, path):
    service = await make_service()
    response = await service.check(check_request(path, policy="cases/allow_true"))
    assert status_of(response) == 400
    assert response.denied_response.body == "bad request"


async def test_parsed_query_and_version_and_principal(make_service):
    service = await make_service()
    request = check_request(
        "/p?a=1&a=2&b=&c=x%20y",
        policy="cases/echo",
        principal="spiffe://cluster.local/ns/default/sa/web",
        size=42,
    )
    response = await service.check(request)
    assert echoed(response, "x-parsed-query") == {"a": ["1", "2"], "b": [""], "c": ["x y"]}
    assert echoed(response, "x-version") == {"ext_authz": "v3", "encoding": "protojson"}
    assert upstream_headers(response)["x-principal"] == "spiffe://cluster.local/ns/default/sa/web"
    assert echoed(response, "x-size") == 42  # int64 as a number, not protojson's string
    assert upstream_headers(response)["x-host"] == "api.example.com"


async def test_header_map_requests_fill_the_headers_map(make_service):
    service = await make_service()
    request = check_request("/h", headers={"X-Probe": "seen"}, header_map=True, policy="cases/echo")
    response = await service.check(request)
    assert upstream_headers(response)["x-header-seen"] == "seen"
