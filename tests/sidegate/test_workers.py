"""``server.workers: N``: N serving processes on one address, quotas exact, clean shutdown.

Functional only (DESIGN.md: no timing in pass/fail tests): two workers answer Check and
ShouldRateLimit over several connections, share one quota through Redis, and SIGTERM stops
every worker with exit status 0. Needs a real Redis (the ``redis_url`` fixture).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from sidegate.config import ConfigError, parse_config
from tests.harness import SidegateProcess

pytestmark = pytest.mark.timeout(120)


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _check(channel: grpc.Channel) -> external_auth_pb2.CheckResponse:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/hello", "example.test"
    return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=30)


def _rate_limit(channel: grpc.Channel, consumer: str) -> rls_pb2.RateLimitResponse:
    request = rls_pb2.RateLimitRequest(domain="sidegate", hits_addend=1)
    descriptor = request.descriptors.add()
    for key, value in (("tier", "free"), ("consumer", consumer)):
        entry = descriptor.entries.add()
        entry.key, entry.value = key, value
    return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=30)


def _config(redis_url: str) -> dict:
    return {
        "server": {"workers": 2, "grace_period_s": 5},
        "authz": {"identity": {"anonymous": [{"path_prefixes": ["/"]}]}},
        "ratelimit": {"backend": "redis", "redis": {"url": redis_url,
                                                    "key_prefix": f"workers-{os.getpid()}:"}},
    }


def test_two_workers_serve_both_services_share_quotas_and_stop_on_sigterm(
    tmp_path: Path, redis_url: str
) -> None:
    proc = SidegateProcess(tmp_path, _config(redis_url))
    proc.start(timeout=90)
    try:
        assert proc.proc is not None
        supervisor = proc.proc.pid
        assert _wait(lambda: len(_children(supervisor)) == 2), proc.output()
        workers = _children(supervisor)
        # /readyz is worker 0's; the other may still be starting (a SIGTERM then kills it).
        assert _wait(lambda: sum(r.get("event") == "serving" for r in proc.logs()) == 2), (
            proc.output()
        )
        # Each channel is its own connection; the kernel spreads them over the workers.
        channels = [grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}",
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(8)]
        try:
            for channel in channels:
                assert _check(channel).status.code == 0
            # The free tier allows 5 per minute per consumer: whichever worker answers, the
            # sixth call of one consumer is over the limit (the bucket is in Redis).
            codes = [_rate_limit(channels[i % len(channels)], "c-shared").overall_code
                     for i in range(6)]
        finally:
            for channel in channels:
                channel.close()
        ok, over = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
        assert codes == [ok] * 5 + [over]
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(60) == 0, proc.output()
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        proc.stop()


def test_a_worker_that_dies_stops_the_others(tmp_path: Path, redis_url: str) -> None:
    proc = SidegateProcess(tmp_path, _config(redis_url))
    proc.start(timeout=90)
    try:
        assert proc.proc is not None
        supervisor = proc.proc.pid
        assert _wait(lambda: len(_children(supervisor)) == 2), proc.output()
        first, second = _children(supervisor)
        os.kill(first, signal.SIGKILL)
        assert proc.proc.wait(60) != 0
        assert not _alive(second)
        assert "stopping the others" in proc.output()
    finally:
        proc.stop()


def test_workers_with_in_memory_buckets_are_refused(tmp_path: Path) -> None:
    text = "server:\n  workers: 2\nratelimit:\n  backend: memory\n"
    with pytest.raises(ConfigError, match=r"workers: 2 needs ratelimit.backend: redis"):
        parse_config(text, str(tmp_path / "sidegate.yaml"), tmp_path)
    # one worker, or rate limiting off, is fine with memory buckets
    parse_config("server:\n  workers: 1\n", "x.yaml", tmp_path)
    parse_config("server:\n  workers: 2\nratelimit:\n  enabled: false\n", "x.yaml", tmp_path)
