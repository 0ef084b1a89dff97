"""Per-call cost of the identity verifiers in-process (no gRPC, no policy), in microseconds.

    python -m bench.identity_micro [--calls 20000] [--repeats 5]

What ``bench.identity_bench`` cannot show on a busy 2-core machine: the verifier's own share of
a Check. Each case calls ``verify()`` on one warm verifier ``--calls`` times, ``--repeats``
times; reported are the best and the median repeat (µs per call). Best-of-N is the usual
estimate of the cost without interference from other processes.

Cases: ``api_key_file`` (a 10 000-key file store, digest + dict lookup + checks),
``api_key_redis_cached`` (Redis store, local cache hit), ``introspection_cached`` (cache hit
plus the exp/aud/iss/scope checks; Authlib's endpoint answered the single miss).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

from sidegate.extauthz.identity.api_keys.digest import KeyDigester, new_key
from sidegate.extauthz.identity.api_keys.file_store import FileKeyStore, write_key_file
from sidegate.extauthz.identity.api_keys.record import ApiKeyRecord
from sidegate.extauthz.identity.api_keys.redis_store import RedisKeyStore
from sidegate.extauthz.identity.api_keys.verifier import ApiKeyVerifier
from sidegate.extauthz.identity.introspection import IntrospectionVerifier
from sidegate.extauthz.identity.introspection_settings import IntrospectionSourceSettings
from tests.identity.introspection_server import CLIENT_ID, CLIENT_SECRET, IntrospectionServer
from tests.identity.test_api_keys import make_view

Call = Callable[[], Awaitable[object]]


async def _time(call: Call, calls: int, repeats: int) -> tuple[float, float]:
    await call()
    per_call = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        per_call.append((time.perf_counter() - started) / calls * 1e6)
    return min(per_call), statistics.median(per_call)


def _records(key: str, n: int) -> list[ApiKeyRecord]:
    d = KeyDigester()
    out = [ApiKeyRecord(digest=d.digest(key), consumer="bench", tier="premium")]
    out += [ApiKeyRecord(digest=d.digest(new_key()), consumer=f"c{i}") for i in range(n)]
    return out


async def run(calls: int, repeats: int, redis_url: str | None) -> list[tuple[str, float, float]]:
    results = []
    key = new_key()
    view = make_view({"x-api-key": key})
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.yaml"
        write_key_file(path, _records(key, 10_000))
        file_verifier = ApiKeyVerifier(FileKeyStore(path, reload_interval=0))
        await file_verifier.start()
        results.append(
            ("api_key_file", *await _time(lambda: file_verifier.verify(key, view), calls, repeats))
        )
        await file_verifier.close()

    if redis_url:
        store = RedisKeyStore(redis_url, prefix="bench:micro:", cache_ttl=3600)
        await store.revoke(KeyDigester().digest(key))
        await store.add(_records(key, 0)[0])
        redis_verifier = ApiKeyVerifier(store)
        results.append(
            (
                "api_key_redis_cached",
                *await _time(lambda: redis_verifier.verify(key, view), calls, repeats),
            )
        )
        await store.revoke(KeyDigester().digest(key))
        await redis_verifier.close()

    server = IntrospectionServer()
    await server.start()
    server.issue("bench-token", expires_at=int(time.time()) + 3600)
    os.environ["SIDEGATE_MICRO_SECRET"] = CLIENT_SECRET
    settings = IntrospectionSourceSettings.model_validate(
        {
            "type": "introspection",
            "name": "micro",
            "endpoint": server.url,
            "client_id": CLIENT_ID,
            "client_secret_env": "SIDEGATE_MICRO_SECRET",
            "cache": {"max_ttl": 3600},
            "audiences": ["orders-api"],
            "issuer": "https://as.example.test",
            "required_scopes": ["orders:read"],
        }
    )
    introspection = IntrospectionVerifier(settings)
    await introspection.start()
    bearer = make_view({"authorization": "Bearer bench-token"})
    timed = await _time(lambda: introspection.verify("bench-token", bearer), calls, repeats)
    if server.hits != 1:
        raise AssertionError(f"expected one introspection call, the server saw {server.hits}")
    results.append(("introspection_cached", *timed))
    await introspection.close()
    await server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--redis-url", help="include the Redis store case (cache hits)")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.calls, args.repeats, args.redis_url))
    print(f"{'case':<22} {'best µs/call':>13} {'median µs/call':>15}")
    for name, best, median in rows:
        print(f"{name:<22} {best:>13.1f} {median:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
