"""Policy decision cost, side by side in one run: embedded engine vs full Check vs OPA REST.

    /tmp/venv/bin/python -m bench.policy_bench [--requests 2000] [--rounds 3] [--no-remote]
        [--path rbac/decision]

Cases (the shipped RBAC policy, ``rbac/decision``, or another shipped decision path with
``--path``; a viewer reading ``/orders/42``, a CheckRequest with 20 headers):

- ``engine (input JSON ready)``: EmbeddedEngine.evaluate_json, the whole input serialised once;
- ``engine, pruned (JSON ready)``: the same with the input pruned to what the policies read
  (``engine.input_needs``, see extauthz/policy/input_paths.py);
- ``engine (dict input)``: EmbeddedEngine.evaluate, serialising the input document each time;
- ``engine, pruned (dict input)``: the same with the pruned document;
- ``check, embedded``: AuthzService.check end to end (request view, input document, identity,
  evaluation, decision, CheckResponse, decision log line to /dev/null), input pruned (default);
- ``check, embedded, unpruned``: the same with ``prune_input: false`` (whole input built/set);
- ``input build only, whole`` / ``pruned``: RequestView + input document + identity, no engine;
- ``remote engine``: RemoteOpaEngine.evaluate against the OPA REST stand-in in a subprocess
  (no OPA binary is available here; the stand-in evaluates with the embedded engine, so this
  shows the REST path's overhead, not OPA's own speed);
- ``check, remote``: AuthzService.check with the remote engine;
- ``remote, 16 in flight``: throughput of the remote engine with 16 concurrent decisions.

The cases above run with the decision cache off (they measure regopy). The decision cache
(``authz.policy.decision_cache``) is measured side by side, cache on vs off:

- ``engine, pruned, cache hit``: the pruned input above, every decision after the first a hit;
- ``engine, mix, cache on|off``: evaluate_json over a sequence of pruned inputs drawn from
  50 paths x 5 identities (250 distinct inputs), the cache emptied before each timed run;
- ``check, mix, cache on|off``: AuthzService.check over that sequence of CheckRequests (each
  with its own request id and time, as in traffic), the cache emptied before each timed run.

For the cache-on cases the hit rate of the timed decisions is reported.

Rounds alternate the cases so machine noise hits them alike; per case the median of the
rounds' decisions/s, p50 and p99 is reported. Timing belongs here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import REGISTRY

from sidegate.extauthz.identity.base import AnonymousAuthenticator, Identity
from sidegate.extauthz.input_document import build_input
from sidegate.extauthz.policy.embedded import EmbeddedEngine
from sidegate.extauthz.policy.input_paths import PathTree, prune
from sidegate.extauthz.policy.remote_opa import RemoteOpaEngine
from sidegate.extauthz.request_view import RequestView
from sidegate.extauthz.service import AuthzService
from sidegate.extauthz.settings import AuthzSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICIES = REPO_ROOT / "policies"
DECISION_PATH = "rbac/decision"
Results = tuple[dict[str, dict[str, float]], dict[str, int]]
VIEWER = Identity(
    method="jwt", subject="u-42", consumer="u-42", roles=("viewer",), scopes=("orders:read",)
)
# The decision-cache mix: 50 paths x 5 callers, picked by the x-bench-caller header.
MIX_PATHS = [f"/orders/{i}" for i in range(30)] + [f"/admin/items/{i}" for i in range(20)]
CALLERS = {
    "viewer": VIEWER,
    "editor": Identity(method="jwt", subject="u-7", consumer="u-7", roles=("editor",)),
    "admin": Identity(method="jwt", subject="u-1", consumer="u-1", roles=("admin",)),
    "reader": Identity(method="api_key", subject="k-1", consumer="acme", scopes=("orders:read",)),
    "nobody": Identity(method="jwt", subject="u-9", consumer="u-9"),
}


class Viewer(AnonymousAuthenticator):
    async def authenticate(self, view: Any) -> Identity:
        caller = view.headers.get("x-bench-caller")
        return CALLERS[caller] if caller else VIEWER


def check_request(decision_path: str = DECISION_PATH) -> Any:
    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.scheme = "GET", "/orders/42?expand=items", "api", "http"
    http.id, http.protocol = "bench-1", "HTTP/1.1"
    for i in range(18):
        http.headers[f"x-header-{i}"] = "v" * 30
    http.headers[":method"] = "GET"
    http.headers[":path"] = "/orders/42?expand=items"
    request.attributes.context_extensions["policy"] = decision_path
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    request.attributes.source.address.socket_address.port_value = 40000
    request.attributes.request.time.GetCurrentTime()
    return request


def mix_requests(count: int, decision_path: str) -> list[Any]:
    """``count`` CheckRequests drawn (seeded) from MIX_PATHS x CALLERS, each with its own id."""
    draw = random.Random(7)
    requests = []
    for index in range(count):
        request = check_request(decision_path)
        http = request.attributes.request.http
        path = draw.choice(MIX_PATHS)
        http.path = path
        http.headers[":path"] = path
        http.id = f"bench-{index}"
        http.headers["x-request-id"] = http.id
        http.headers["x-bench-caller"] = draw.choice(sorted(CALLERS))
        requests.append(request)
    return requests


def input_document(request: Any, needs: PathTree | None = None) -> dict[str, Any]:
    view = RequestView.from_check_request(request)
    document = build_input(view, None, needs)
    caller = view.headers.get("x-bench-caller")
    document["identity"] = (CALLERS[caller] if caller else VIEWER).as_input()
    return prune(document, needs)


def cache_counts() -> tuple[float, float]:
    def count(result: str) -> float:
        labels = {"result": result}
        return REGISTRY.get_sample_value("sidegate_policy_decision_cache_total", labels) or 0.0

    return count("hit"), count("miss")


async def measure(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def measure_concurrent(call: Callable[[], Awaitable[Any]], n: int, width: int) -> float:
    """Decisions per second with ``width`` decisions in flight."""
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return n / (time.perf_counter() - started)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_standin(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from aiohttp import web; from pathlib import Path;"
        "from tests.policy.opa_standin import OpaStandIn;"
        "web.run_app(OpaStandIn(Path(sys.argv[1])).app, host='127.0.0.1', port=int(sys.argv[2]),"
        " print=None, access_log=None)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(POLICIES), str(port)], cwd=REPO_ROOT)
    from tests.conftest import wait_for_port

    wait_for_port(port)
    return proc


def service(engine: Any, *, prune_input: bool = True) -> AuthzService:
    """The engine is passed in: the settings' decision_cache only applies through the factory."""
    settings = AuthzSettings.model_validate(
        {"policy": {"directory": str(POLICIES), "prune_input": prune_input}}
    )
    return AuthzService(settings, engine, Viewer())


def compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


async def run(
    requests: int, rounds: int, *, decision_path: str = DECISION_PATH, remote_cases: bool = True
) -> Results:
    from tests.conftest import free_port

    embedded = EmbeddedEngine(POLICIES, cache_decisions=False)
    embedded.load()
    cached = EmbeddedEngine(POLICIES, cache_decisions=True)
    cached.load()
    assert cached.decision_cache is not None
    request = check_request(decision_path)
    document = input_document(request)
    document_json = compact(document)
    pruned = input_document(request, embedded.input_needs)
    pruned_json = compact(pruned)

    embedded_service = service(embedded)
    unpruned_service = service(embedded, prune_input=False)
    # Every path must answer the same before anything is timed.
    expected = embedded.evaluate_json(decision_path, document_json).value
    assert expected in (True, {"allowed": True}), expected
    assert embedded.evaluate_json(decision_path, pruned_json).value == expected
    assert (await embedded_service.check(request)).status.code == 0
    assert (await unpruned_service.check(request)).status.code == 0
    cached_service = service(cached)
    mix = mix_requests(requests, decision_path)
    mix_json = [compact(input_document(r, embedded.input_needs)) for r in mix]
    for one, one_json in zip(mix[:300], mix_json, strict=False):
        uncached_value = embedded.evaluate_json(decision_path, one_json).value
        assert cached.evaluate_json(decision_path, one_json).value == uncached_value
        assert cached.evaluate_json(decision_path, one_json).value == uncached_value
        on, off = await cached_service.check(one), await embedded_service.check(one)
        assert on.status.code == off.status.code
        assert on.denied_response.status.code == off.denied_response.status.code
    next_input = itertools.cycle(mix_json).__next__
    next_request = itertools.cycle(mix).__next__

    async def engine_json() -> None:
        embedded.evaluate_json(decision_path, document_json)

    async def engine_pruned_json() -> None:
        embedded.evaluate_json(decision_path, pruned_json)

    async def engine_dict() -> None:
        await embedded.evaluate(decision_path, document)

    async def engine_pruned_dict() -> None:
        await embedded.evaluate(decision_path, pruned)

    async def cached_hit() -> None:
        cached.evaluate_json(decision_path, pruned_json)

    async def mix_on() -> None:
        cached.evaluate_json(decision_path, next_input())

    async def mix_off() -> None:
        embedded.evaluate_json(decision_path, next_input())

    async def build_whole() -> None:
        input_document(request)

    async def build_pruned() -> None:
        input_document(request, embedded.input_needs)

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "engine (input JSON ready)": engine_json,
        "engine, pruned (JSON ready)": engine_pruned_json,
        "engine (dict input)": engine_dict,
        "engine, pruned (dict input)": engine_pruned_dict,
        "check, embedded": lambda: embedded_service.check(request),
        "check, embedded, unpruned": lambda: unpruned_service.check(request),
        "input build only, whole": build_whole,
        "input build only, pruned": build_pruned,
        "engine, pruned, cache hit": cached_hit,
        "engine, mix, cache off": mix_off,
        "engine, mix, cache on": mix_on,
        "check, mix, cache off": lambda: embedded_service.check(next_request()),
        "check, mix, cache on": lambda: cached_service.check(next_request()),
    }
    # Cases timed from an empty cache (the warm-up would otherwise fill it with all 250).
    cold = {"engine, mix, cache on", "check, mix, cache on"}
    hit_rates: dict[str, list[float]] = {name: [] for name in (*cold, "engine, pruned, cache hit")}
    sizes = {"input bytes": len(document_json), "pruned input bytes": len(pruned_json)}
    standin: subprocess.Popen[bytes] | None = None
    remote: RemoteOpaEngine | None = None
    if remote_cases:
        port = free_port()
        standin = start_standin(port)
        remote = RemoteOpaEngine(f"http://127.0.0.1:{port}", timeout=5.0, max_connections=16)
        await remote.start()
        remote_service = service(remote)
        assert (await remote.evaluate(decision_path, document)).value == expected
        assert (await remote_service.check(request)).status.code == 0

        async def remote_eval() -> None:
            assert remote is not None
            await remote.evaluate(decision_path, document)

        cases["remote engine"] = remote_eval
        cases["check, remote"] = lambda: remote_service.check(request)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    if remote_cases:
        rows["remote, 16 in flight"] = []
    try:
        for _ in range(rounds):
            for name, call in cases.items():
                await measure(call, min(200, requests))  # warm up
                if name in cold and cached.decision_cache is not None:
                    cached.decision_cache.clear()
                counts = cache_counts()
                samples = await measure(call, requests)
                if name in hit_rates:
                    hits, misses = (a - b for a, b in zip(cache_counts(), counts, strict=True))
                    hit_rates[name].append(hits / max(1.0, hits + misses))
                rows[name].append(
                    {
                        "per_s": len(samples) / sum(samples),
                        "p50_us": percentile(samples, 0.50) * 1e6,
                        "p99_us": percentile(samples, 0.99) * 1e6,
                    }
                )
            if remote_cases:
                rate = await measure_concurrent(cases["remote engine"], requests, 16)
                rows["remote, 16 in flight"].append({"per_s": rate, "p50_us": 0.0, "p99_us": 0.0})
    finally:
        if remote is not None:
            await remote.close()
        if standin is not None:
            standin.terminate()
            standin.wait(10)
    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in rows.items()
    }
    for name, rates in hit_rates.items():
        medians[name]["hit_rate"] = statistics.median(rates)
    sizes["distinct mix inputs"] = len(set(mix_json))
    return medians, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="decisions per case per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-remote", action="store_true", help="embedded cases only (no OPA stand-in)"
    )
    parser.add_argument("--path", default=DECISION_PATH, help="decision path (must allow)")
    args = parser.parse_args()
    # The decision log line is part of a Check's cost; write it where it costs no terminal.
    devnull = open("/dev/null", "w")
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(devnull),
    )
    logging.disable(logging.CRITICAL)
    results, sizes = asyncio.run(
        run(args.requests, args.rounds, decision_path=args.path, remote_cases=not args.no_remote)
    )
    base = results["engine (input JSON ready)"]["per_s"]
    print(f"policy {args.path}, {args.requests} decisions x {args.rounds} rounds (medians)")
    print(", ".join(f"{name}: {size}" for name, size in sizes.items()))
    header = f"{'case':28} {'decisions/s':>12} {'p50 us':>9} {'p99 us':>9} {'vs engine':>10}"
    print(f"{header} {'hit rate':>9}")
    for name, row in results.items():
        p50 = f"{row['p50_us']:9.0f}" if row["p50_us"] else f"{'-':>9}"
        p99 = f"{row['p99_us']:9.0f}" if row["p99_us"] else f"{'-':>9}"
        rate = f"{row['hit_rate']:9.1%}" if "hit_rate" in row else ""
        print(f"{name:28} {row['per_s']:12.0f} {p50} {p99} {row['per_s'] / base:9.2f}x {rate}")


if __name__ == "__main__":
    main()
