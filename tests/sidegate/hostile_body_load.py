"""A real Envoy in front of ``sidegate serve`` whose policy reads the body, and a measurement of
how much hostile bodies delay concurrent normal requests (shared by the test and bench/)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tests.harness import Stack, http_request

BODY_POLICY = """package app
import rego.v1

default allow := false

allow if input.parsed_path[0] == "hello"
allow if input.parsed_body.ok[0] == "yes"
"""
MAX_BODY = 1_048_576
BOUNDARY = "hostileBoundary42"


def start_stack(workdir: Path, model: str = "aio") -> AbstractContextManager[Stack]:
    policies = workdir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "app.rego").write_text(BODY_POLICY)
    config = {
        "server": {"model": model},
        "authz": {"policy": {"directory": str(policies), "default_path": "app/allow"}},
        "ratelimit": {"enabled": False},
    }

    def mutate(cfg: dict[str, Any]) -> None:
        for listener in cfg["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for net_filter in chain["filters"]:
                    manager = net_filter["typed_config"]
                    if "route_config" in manager and listener["name"] == "ingress":
                        # Normal requests are answered by Envoy after the Check: their latency
                        # is Envoy + sidegate only (the Python echo upstream adds ~40 ms of
                        # delayed-ACK noise on its own).
                        host = manager["route_config"]["virtual_hosts"][0]
                        host["routes"].insert(0, {
                            "match": {"path": "/hello"},
                            "direct_response": {"status": 200, "body": {"inline_string": "hi"}},
                        })
                    # Rate limits would turn the repeated normal requests into 429s.
                    manager["http_filters"] = [
                        f for f in manager.get("http_filters", [])
                        if f["name"] != "envoy.filters.http.ratelimit"
                    ]
                    for http_filter in manager["http_filters"]:
                        if http_filter["name"] == "envoy.filters.http.ext_authz":
                            typed = http_filter["typed_config"]
                            typed["with_request_body"]["max_request_bytes"] = MAX_BODY
                            typed["grpc_service"]["timeout"] = "5s"
            listener["per_connection_buffer_limit_bytes"] = 4 * MAX_BODY

    return Stack.start(workdir, config, envoy_mutate=mutate)


def many_parts_body() -> bytes:
    """1 MiB of tiny parts: 3.2 s for the stdlib email parser, refused by the part cap now."""
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'.encode()
    closing = f"--{BOUNDARY}--\r\n".encode()
    return part * ((MAX_BODY - len(closing)) // len(part)) + closing


def widest_allowed_body(parts: int = 100) -> bytes:
    """The most parts the default cap lets through, filling 1 MiB: parsed, then denied."""
    closing = f"--{BOUNDARY}--\r\n".encode()
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{parts:04d}"\r\n\r\n'
    size = (MAX_BODY - len(closing)) // parts - len(head) - 2
    return (
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i:04d}"\r\n\r\n'.encode()
            + b"v" * size
            + b"\r\n"
            for i in range(parts)
        )
        + closing
    )


def multipart_headers() -> dict[str, str]:
    return {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def control_bodies(hostile: list[bytes]) -> list[tuple[dict[str, str], bytes]]:
    """Bodies of the same sizes that no parser touches (text/plain: parsed_body null)."""
    return [({"content-type": "text/plain"}, b"x" * len(body)) for body in hostile]


def _latencies(stack: Stack, count: int, pause: float) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        status, _, body = stack.request("GET", "/hello")
        latencies.append(time.perf_counter() - started)
        assert status == 200, body
        time.sleep(pause)
    return latencies


def _under_flood(
    stack: Stack,
    bodies: list[tuple[dict[str, str], bytes]],
    samples: int,
    pause: float,
    flood_pause: float,
    on_answer: Callable[[int], None] | None,
) -> tuple[list[float], int]:
    """Normal latencies while one connection per body sends it again and again."""
    stop = threading.Event()
    sent = [0]
    errors: list[BaseException] = []

    def flood(headers: dict[str, str], body: bytes) -> None:
        try:
            while not stop.is_set():
                status, _, _ = http_request(
                    stack.envoy.port, "POST", "/upload", headers, body, timeout=30
                )
                sent[0] += 1
                if on_answer is not None:
                    on_answer(status)
                stop.wait(flood_pause)
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    threads = [threading.Thread(target=flood, args=pair, daemon=True) for pair in bodies]
    for thread in threads:
        thread.start()
    while sent[0] < len(bodies) and not errors:
        time.sleep(0.01)  # every flood connection has sent once before measuring
    try:
        latencies = _latencies(stack, samples, pause)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    if errors:
        raise errors[0]
    return latencies, sent[0]


def measure_delay(
    stack: Stack,
    hostile: list[bytes],
    *,
    rounds: int = 3,
    samples: int = 12,
    pause: float = 0.01,
    flood_pause: float = 0.1,
    on_hostile: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Latency (ms) of normal requests alone, under a control flood (same-sized bodies nobody
    parses) and under the ``hostile`` flood, in alternating rounds. The delay the hostile
    bodies cause is hostile minus control: both floods cost Envoy and the transport the same,
    so on a shared machine what remains is sidegate parsing them. ``on_hostile(status)`` sees
    each hostile answer."""
    _latencies(stack, 5, 0)  # warm: connections, policy, caches
    hostile_pairs = [(multipart_headers(), body) for body in hostile]
    control_pairs = control_bodies(hostile)
    alone: list[float] = []
    control: list[float] = []
    loaded: list[float] = []
    sent = 0
    for _ in range(rounds):
        alone += _latencies(stack, samples, pause)
        control += _under_flood(stack, control_pairs, samples, pause, flood_pause, None)[0]
        latencies, count = _under_flood(
            stack, hostile_pairs, samples, pause, flood_pause, on_hostile
        )
        loaded += latencies
        sent += count

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 2)

    def median(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 2)

    return {
        "alone_median_ms": median(alone),
        "control_median_ms": median(control),
        "hostile_median_ms": median(loaded),
        "hostile_p90_ms": ms(loaded, 0.9),
        "delay_median_ms": round(median(loaded) - median(control), 2),
        "hostile_requests": float(sent),
    }
