"""One decision log line per Check: ids, path, result, timings; secrets masked."""

from __future__ import annotations

import json

from structlog.testing import capture_logs

from sidegate.extauthz.policy.decision_log import mask_input
from tests.policy.helpers import check_request, metadata_of

SECRET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJl"


def check_lines(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry["event"] == "check"]


async def test_log_line_fields(make_service):
    service = await make_service()
    with capture_logs() as logs:
        response = await service.check(check_request(policy="cases/custom_deny"))
    [line] = check_lines(logs)
    assert line["decision_id"] == metadata_of(response)["decision_id"]
    assert line["policy"] == "cases/custom_deny"
    assert line["policy_result"] == "deny"
    assert line["status"] == 401
    assert line["input_ms"] >= 0 and line["eval_ms"] > 0
    assert "subject" in line
    assert "input" not in line  # off unless configured


async def test_error_results_are_logged_with_their_kind(make_service):
    service = await make_service()
    with capture_logs() as logs:
        await service.check(check_request(policy="cases/undefined_rule"))
        await service.check(check_request(policy="cases/remove_string"))
    results = [line["policy_result"] for line in check_lines(logs)]
    assert results == ["undefined", "ill_typed"]


async def test_dry_run_is_visible_in_the_log(make_service):
    service = await make_service(dry_run=True)
    with capture_logs() as logs:
        await service.check(check_request(policy="cases/allow_false"))
    [line] = check_lines(logs)
    assert line["dry_run"] is True and line["policy_result"] == "deny"
    assert line["decision"] == "allowed"


async def test_logged_input_masks_credentials(make_service):
    service = await make_service(
        decision_log={"include_input": True, "sensitive_headers": ["authorization", "x-tenant"]},
    )
    request = check_request(
        "/orders?api_key=k-123&page=2",
        method="POST",
        headers={
            "authorization": f"Bearer {SECRET_TOKEN}",
            "x-tenant": "acme-secret-tenant",
            "x-plain": "visible",
            "content-type": "application/json",
        },
        body=json.dumps({"password": "hunter2"}),
        policy="cases/allow_true",
    )
    with capture_logs() as logs:
        await service.check(request)
    [line] = check_lines(logs)
    text = json.dumps(line, default=str)
    for secret in (SECRET_TOKEN, "acme-secret-tenant", "k-123", "hunter2"):
        assert secret not in text
    headers = line["input"]["attributes"]["request"]["http"]["headers"]
    assert headers["authorization"].startswith("sha256:")
    assert headers["x-plain"] == "visible"
    assert line["input"]["parsed_query"] == {"api_key": ["***"], "page": ["2"]}
    assert line["input"]["parsed_body"] == "***"


def test_mask_input_leaves_the_original_untouched():
    doc = {
        "attributes": {"request": {"http": {"headers": {"cookie": "s=1"}, "path": "/a?t=x"}}},
        "parsed_query": {"token": ["x"]},
        "identity": {"subject": "u1", "claims": {"email": "a@b.c"}},
    }
    masked = mask_input(doc, ["cookie"], ["token"])
    assert doc["attributes"]["request"]["http"]["headers"]["cookie"] == "s=1"
    assert doc["parsed_query"] == {"token": ["x"]}
    assert masked["attributes"]["request"]["http"]["path"] == "/a?***"
    assert masked["identity"] == {"subject": "u1", "claims": ["email"]}
