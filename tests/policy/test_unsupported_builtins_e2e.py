"""Unsupported builtins through the front door: ``sidegate serve`` refuses them at start, and a
SIGHUP reload to such a policy keeps the old bundle answering real Envoy requests.

Before, ``net.cidr_contains`` evaluated to undefined in the embedded engine, so ``blocked if
net.cidr_contains(...)`` + ``decide if not blocked`` let 10.1.2.3 through after the reload.
The policy also calls ``print()``: sidegate's output must stay JSON lines throughout.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.harness import SidegateProcess, Stack

HEADER = 'object.get(input.attributes.request.http.headers, "x-client-ip", "")'

GOOD = f"""package e2e
import rego.v1

default decide := false

blocked if startswith({HEADER}, "10.")

decide if {{
	print("deciding for", input.attributes.request.http.path)
	not blocked
}}
"""

BAD = GOOD.replace(f'startswith({HEADER}, "10.")', f'net.cidr_contains("10.0.0.0/8", {HEADER})')
BAD_LINE, BAD_COL = 6, 12  # where net.cidr_contains starts in BAD


def config(policies: Path) -> dict[str, object]:
    return {"authz": {"policy": {"directory": str(policies), "default_path": "e2e/decide"}}}


def policy_dir(tmp_path: Path, text: str) -> tuple[Path, Path]:
    policies = tmp_path / "policies"
    policies.mkdir()
    policy = policies / "e2e.rego"
    policy.write_text(text)
    return policies, policy


def test_serve_refuses_an_unsupported_builtin_at_start(tmp_path: Path) -> None:
    policies, policy = policy_dir(tmp_path, BAD)
    sidegate = SidegateProcess(tmp_path, config(policies))
    sidegate.start(wait_ready=False)
    try:
        assert sidegate.proc is not None
        code = sidegate.proc.wait(timeout=120)
    finally:
        sidegate.stop()
    output = sidegate.output()
    assert code != 0
    assert f"{policy}:{BAD_LINE}:{BAD_COL}: builtin net.cidr_contains" in output
    assert "engine: remote" in output


def test_a_reload_to_an_unsupported_builtin_keeps_the_old_answer(tmp_path: Path) -> None:
    policies, policy = policy_dir(tmp_path, GOOD)
    with Stack.start(tmp_path, config(policies)) as stack:
        inside = {"x-client-ip": "10.1.2.3"}
        assert stack.request("GET", "/a", headers=inside)[0] == 403
        assert stack.request("GET", "/a", headers={"x-client-ip": "192.0.2.1"})[0] == 200

        policy.write_text(BAD)
        stack.sidegate.signal(signal.SIGHUP)
        failure = wait_for_event(stack, "policy_reload_failed")
        assert f"{policy}:{BAD_LINE}:{BAD_COL}: builtin net.cidr_contains" in failure["error"]
        # The running bundle keeps answering: still denied, not an undefined turned allow.
        for _ in range(3):
            assert stack.request("GET", "/a", headers=inside)[0] == 403
        assert stack.request("GET", "/a", headers={"x-client-ip": "192.0.2.1"})[0] == 200

        output = stack.sidegate.output()
    # print() ran at load and on every decision: nothing but JSON lines reached the output.
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert "deciding for" not in output


def wait_for_event(stack: Stack, event: str, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in stack.sidegate.logs():
            if record.get("event") == event:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no {event} within {timeout}s:\n{stack.sidegate.output()[-3000:]}")
