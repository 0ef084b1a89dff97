"""Issue 9 through a real Envoy: hostile multipart bodies (``with_request_body`` at 1 MiB, a
policy that reads ``parsed_body``) do not stall the loop for concurrent normal requests.

Before: one 1 MiB body of 20k parts cost the event loop ~3.2 s in the stdlib email parser, so
normal requests queued behind it (or hit Envoy's ext_authz timeout). The bound asserted here is
deliberately generous (a loaded, shared machine); bench/body_bench.py has the precise costs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sidegate.hostile_body_load import (
    many_parts_body,
    measure_delay,
    multipart_headers,
    start_stack,
    widest_allowed_body,
)

pytestmark = pytest.mark.timeout(240)


def test_hostile_multipart_bodies_do_not_delay_normal_requests(tmp_path: Path) -> None:
    with start_stack(tmp_path) as stack:
        ok = "--hostileBoundary42\r\nContent-Disposition: form-data; name=\"ok\"\r\n\r\nyes\r\n"
        status, _, body = stack.request(
            "POST", "/upload", multipart_headers(), ok + "--hostileBoundary42--\r\n"
        )
        assert status == 200, body  # the policy really reads the parsed body
        statuses: list[int] = []
        result = measure_delay(
            stack, [many_parts_body(), widest_allowed_body()], on_hostile=statuses.append
        )
        assert result["hostile_requests"] >= 2
        # Refused by the part cap (400) / parsed and denied by the policy (403).
        assert set(statuses) == {400, 403}, set(statuses)
        assert result["delay_median_ms"] < 50, result
        logs = stack.sidegate.logs()
        refused = [r for r in logs if r.get("event") == "check" and r.get("status") == 400]
        assert refused and all("more than 100 parts" in r["reason"] for r in refused)
        assert "Traceback" not in stack.sidegate.output()
