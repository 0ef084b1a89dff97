"""Identity cost per Check, one case per identity method, side by side in one run.

    python -m bench.identity_bench [--runs 3] [--duration 5] [--concurrency 32] [--channels 2]

One ``sidegate serve`` process carries every case's identity source, each limited to requests
whose context extension ``bench`` names the case, so the cases differ only in the credential
they present. Rounds interleave the cases (same machine load for each round's numbers); every
answer must be OK (status 0), else the run fails. Reported: Checks/s, p50/p99 (medians of the
rounds, with min-max) and each case's throughput relative to the anonymous baseline of the same
round. The client is a grpc.aio load generator in this process, sharing the cores with the
server: compare the cases with each other, not with other benches.

Adding a case: write ``def <name>_case(ctx: BenchContext) -> IdentityCase`` and append it to
``CASES``. Cases so far: ``anonymous`` (baseline: no credential, an anonymous route),
``api_key`` (x-api-key from a file store), ``introspection_cached`` (an opaque bearer token
whose introspection answer is cached; Authlib's RFC 7662 endpoint runs on loopback and the run
fails unless the cache held, i.e. the server saw one call per round at most).
``jwt_rs256_cache_on`` / ``jwt_rs256_cache_off`` (a valid RS256 bearer token against a static
PEM key, verified-token cache on / off: the signature check's share of a Check).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

from bench.grpc_load import check_request
from bench.stats import paired_ratios, spread, table

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


@dataclass
class IdentityCase:
    name: str
    headers: dict[str, str]
    sources: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # called after each round's load with the round's call count; raises BenchError-like
    # AssertionError when the case did not measure what it claims (e.g. cache misses)
    verify: Callable[[int], None] | None = None


@dataclass
class BenchContext:
    workdir: Path
    stack: contextlib.ExitStack


# --- cases ------------------------------------------------------------------------------------


def anonymous_case(ctx: BenchContext) -> IdentityCase:
    return IdentityCase("anonymous", headers={})


def api_key_case(ctx: BenchContext) -> IdentityCase:
    from sidegate.extauthz.identity.api_keys.digest import KeyDigester, new_key
    from sidegate.extauthz.identity.api_keys.file_store import write_key_file
    from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord

    key = new_key()
    digester = KeyDigester()
    # a realistically sized store: the lookup is by digest, so its size should not matter
    records = [ApiKeyRecord(digest=digester.digest(key), consumer="bench", tier="premium")]
    records += [
        ApiKeyRecord(digest=digester.digest(new_key()), consumer=f"c{i}", tier="free")
        for i in range(10_000)
    ]
    path = ctx.workdir / "api-keys.yaml"
    write_key_file(path, records)
    source = {
        "name": "bench-api-key",
        "type": "api_key",
        "store": {"type": "file", "path": str(path)},
    }
    return IdentityCase("api_key", headers={"x-api-key": key}, sources=[source])


class _ServerThread:
    """Authlib's RFC 7662 endpoint (tests/identity/introspection_server.py) in its own loop."""

    def __init__(self) -> None:
        from tests.identity.introspection_server import IntrospectionServer

        self.server = IntrospectionServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> _ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def introspection_cached_case(ctx: BenchContext) -> IdentityCase:
    from tests.identity.introspection_server import CLIENT_ID, CLIENT_SECRET

    running = ctx.stack.enter_context(_ServerThread())
    running.server.issue("bench-opaque-token", expires_at=int(time.time()) + 24 * 3600)
    source = {
        "name": "bench-introspection",
        "type": "introspection",
        "endpoint": running.server.url,
        "client_id": CLIENT_ID,
        "client_secret_env": "SIDEGATE_BENCH_INTROSPECTION_SECRET",
        "cache": {"max_ttl": 3600},
    }
    seen = {"hits": 0}

    def verify(calls: int) -> None:
        hits = running.server.hits - seen["hits"]
        seen["hits"] = running.server.hits
        if hits > 1:
            raise AssertionError(f"introspection cache missed: {hits} calls for {calls} Checks")

    return IdentityCase(
        "introspection_cached",
        headers={"authorization": "Bearer bench-opaque-token"},
        sources=[source],
        env={"SIDEGATE_BENCH_INTROSPECTION_SECRET": CLIENT_SECRET},
        verify=verify,
    )


def _jwt_case(ctx: BenchContext, *, cache: bool) -> IdentityCase:
    """A valid RS256 token (2048-bit key, static PEM) for a JWT source, token cache on or off."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    name = "jwt_rs256_cache_on" if cache else "jwt_rs256_cache_off"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = ctx.workdir / f"{name}.pem"
    pem.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    issuer = "https://idp.bench.example"
    now = int(time.time())
    claims = {"iss": issuer, "sub": "user-1", "aud": "api", "iat": now, "exp": now + 24 * 3600,
              "tier": "premium", "scope": "orders:read", "roles": ["reader"]}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench-1"})
    source = {
        "name": name.replace("_", "-"),
        "type": "jwt",
        "token_cache": cache,
        "issuers": [
            {
                "issuer": issuer,
                "algorithms": ["RS256"],
                "audiences": ["api"],
                "keys": [{"kid": "bench-1", "pem_file": str(pem)}],
            }
        ],
    }
    return IdentityCase(name, headers={"authorization": f"Bearer {token}"}, sources=[source])


def jwt_cache_on_case(ctx: BenchContext) -> IdentityCase:
    return _jwt_case(ctx, cache=True)


def jwt_cache_off_case(ctx: BenchContext) -> IdentityCase:
    return _jwt_case(ctx, cache=False)


CASES: list[Callable[[BenchContext], IdentityCase]] = [
    anonymous_case,
    api_key_case,
    introspection_cached_case,
    jwt_cache_on_case,
    jwt_cache_off_case,
]


# --- running ----------------------------------------------------------------------------------


def sidegate_config(cases: list[IdentityCase]) -> dict[str, Any]:
    sources = []
    for case in cases:
        for source in case.sources:
            sources.append({**source, "routes": {"context_extensions": {"bench": case.name}}})
    return {
        # warning: the per-Check info log line would cost every case the same, and hide the
        # differences being measured
        "server": {"log_level": "warning"},
        "authz": {
            "policy": {"directory": str(REPO_ROOT / "policies")},
            "identity": {
                "sources": sources,
                "anonymous": [{"context_extensions": {"bench": "anonymous"}}],
            },
        },
        "ratelimit": {"enabled": False},
    }


def _request(case: IdentityCase) -> Any:
    request = check_request("/bench")
    http = request.attributes.request.http
    for name, value in case.headers.items():
        http.headers[name] = value
    request.attributes.context_extensions["bench"] = case.name
    return request


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def _load(
    port: int, request: Any, *, duration_s: float, concurrency: int, channels: int
) -> tuple[int, float, list[float]]:
    chans = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(channels)
    ]
    stubs = [external_auth_pb2_grpc.AuthorizationStub(c) for c in chans]
    latencies: list[float] = []
    failures: list[str] = []
    try:
        for stub in stubs:  # connect, warm the caches, and prove the answer is OK
            answer = await stub.Check(request, timeout=10)
            if answer.status.code != 0:
                raise AssertionError(f"Check was not OK: {answer.status}")
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker(stub: Any) -> None:
            while time.perf_counter() < deadline and not failures:
                t0 = time.perf_counter()
                try:
                    answer = await stub.Check(request, timeout=5)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}")
                    return
                latencies.append((time.perf_counter() - t0) * 1000)
                if answer.status.code != 0:
                    failures.append(f"status {answer.status.code}")
                    return

        await asyncio.gather(*(worker(stubs[i % channels]) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        for chan in chans:
            await chan.close()
    if failures:
        raise AssertionError(f"{len(failures)} failed Check(s), first: {failures[0]}")
    return len(latencies), elapsed, latencies


@contextlib.contextmanager
def _sidegate(workdir: Path, cases: list[IdentityCase]) -> Iterator[Any]:
    from tests.harness import SidegateProcess

    env: dict[str, str] = {}
    for case in cases:
        env.update(case.env)
    proc = SidegateProcess(workdir, sidegate_config(cases), env=env)
    proc.start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir) if args.workdir else RESULTS_DIR / "identity-work"
    workdir.mkdir(parents=True, exist_ok=True)
    selected = set(args.cases.split(",")) if args.cases else None
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        ctx = BenchContext(workdir, stack)
        cases = [build(ctx) for build in CASES]
        cases = [c for c in cases if selected is None or c.name in selected]
        proc = stack.enter_context(_sidegate(workdir, cases))
        # an unrecorded pass first: the first calls of a fresh process (policy compile paths,
        # connection set-up, allocator growth) would otherwise land on whichever case is first
        def drive(case: IdentityCase, duration_s: float) -> tuple[int, float, list[float]]:
            return asyncio.run(
                _load(
                    proc.grpc_port,
                    _request(case),
                    duration_s=duration_s,
                    concurrency=args.concurrency,
                    channels=args.channels,
                )
            )

        for case in cases:
            drive(case, args.warmup)
            if case.verify is not None:
                case.verify(0)
        for round_index in range(1, args.runs + 1):
            for case in cases:
                calls, seconds, lat = drive(case, args.duration)
                if case.verify is not None:
                    case.verify(calls)
                lat.sort()
                row = {
                    "round": round_index,
                    "case": case.name,
                    "calls": calls,
                    "seconds": seconds,
                    "checks_per_s": calls / seconds if seconds else 0.0,
                    "p50_ms": _percentile(lat, 50),
                    "p99_ms": _percentile(lat, 99),
                }
                rows.append(row)
                print(
                    f"  round {round_index} {case.name:<22} {row['checks_per_s']:>8,.0f} Checks/s"
                    f"  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms",
                    flush=True,
                )
    return {"args": vars(args), "runs": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {r["round"]: r["checks_per_s"] for r in rows if r["case"] == "anonymous"}
    out = []
    for name in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == name]
        out.append(
            {
                "case": name,
                "checks_per_s": spread([r["checks_per_s"] for r in mine]).as_dict(),
                "p50_ms": spread([r["p50_ms"] for r in mine]).as_dict(),
                "p99_ms": spread([r["p99_ms"] for r in mine]).as_dict(),
                "vs_anonymous": paired_ratios(
                    {r["round"]: r["checks_per_s"] for r in mine}, base
                ).as_dict(),
            }
        )
    return out


def render(summary: list[dict[str, Any]]) -> str:
    from bench.stats import Spread

    def fmt(d: dict[str, Any], digits: int = 0) -> str:
        return Spread(**d).fmt(digits)

    rows = [
        [
            s["case"],
            fmt(s["checks_per_s"]),
            fmt(s["p50_ms"], 2),
            fmt(s["p99_ms"], 2),
            fmt(s["vs_anonymous"], 2),
        ]
        for s in summary
    ]
    return table(["case", "Checks/s median (min-max)", "p50 ms", "p99 ms", "vs anonymous"], rows)


def jwt_verifier_table(runs: int, duration_s: float) -> str:
    """The JWT verifier alone, no gRPC, no policy: what the token cache saves per Check."""
    from sidegate.extauthz.identity.jwt import JwtVerifier
    from sidegate.extauthz.identity.jwt_settings import JwtSourceSettings

    rates: dict[str, list[float]] = {"cache on": [], "cache off": []}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ctx = BenchContext(workdir, stack)
        cases = {"cache on": _jwt_case(ctx, cache=True), "cache off": _jwt_case(ctx, cache=False)}

        async def measure(case: IdentityCase) -> float:
            verifier = JwtVerifier(JwtSourceSettings.model_validate(case.sources[0]))
            token = case.headers["authorization"].removeprefix("Bearer ")
            calls, start = 0, time.perf_counter()
            try:
                while time.perf_counter() - start < duration_s:
                    for _ in range(100):
                        await verifier.verify(token, None)  # type: ignore[arg-type]
                    calls += 100
            finally:
                await verifier.close()
            return calls / (time.perf_counter() - start)

        for _ in range(runs):
            for name, case in cases.items():
                rates[name].append(asyncio.run(measure(case)))
    rows = [[name, spread(values).fmt(0)] for name, values in rates.items()]
    ratio = paired_ratios(dict(enumerate(rates["cache on"])), dict(enumerate(rates["cache off"])))
    return (
        "JwtVerifier.verify(), RS256 2048-bit, one token, in process\n"
        + table(["token cache", "verifications/s median (min-max)"], rows)
        + f"\ncache on / cache off: {ratio.fmt(1)}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds per case")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--cases", help="comma-separated subset of case names")
    parser.add_argument("--workdir", help="scratch directory (default bench/results/identity-work)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument(
        "--jwt-verifier-only",
        action="store_true",
        help="time JwtVerifier.verify() alone in process (RS256, cache on/off) and exit",
    )
    args = parser.parse_args(argv)
    if args.jwt_verifier_only:
        print(jwt_verifier_table(args.runs, args.duration))
        return 0
    result = run(args)
    print()
    print(render(result["summary"]))
    if not args.no_save:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = RESULTS_DIR / f"identity-{stamp}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"\nsaved {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
