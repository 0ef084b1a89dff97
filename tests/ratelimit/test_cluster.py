"""A real 3-master Redis Cluster on loopback: multi-descriptor requests stay exact."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from sidegate.ratelimit.service import RateLimitService
from sidegate.ratelimit.settings import RateLimitSettings
from tests.conftest import RedisServer, free_port
from tests.ratelimit.conftest import OK, OVER, codes, request, write_rules

DOMAINS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and below 65536 too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port
        port = random.randrange(20000, 55000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    pytest.fail("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail("redis-cli is not installed (apt-get install redis-tools)")
    base = tmp_path_factory.mktemp("cluster")
    nodes = []
    try:
        for index in range(3):
            workdir = base / f"n{index}"
            node = RedisServer(workdir, ("--cluster-enabled", "yes", "--cluster-config-file",
                                         str(workdir / "nodes.conf"),
                                         "--cluster-node-timeout", "2000"))
            node.port = cluster_port()
            node.start()
            nodes.append(node)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [redis.Redis(port=n.port).cluster("info")["cluster_state"] for n in nodes]
            if states == ["ok"] * 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"cluster not ok: {states}")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def service(tmp_path: Path, cluster: list[RedisServer]) -> AsyncIterator[RateLimitService]:
    files = {
        f"{d}.yaml": f"domain: {d}\ndescriptors:\n"
                     "  - {key: a, rate_limit: {requests_per_unit: 4, unit: hour}}\n"
                     "  - {key: b, rate_limit: {requests_per_unit: 6, unit: hour}}\n"
                     "  - key: c\n    rate_limit:\n      limits:\n"
                     "        - {requests_per_unit: 5, unit: hour}\n"
                     "        - {requests_per_unit: 8, unit: year, algorithm: fixed_window}\n"
        for d in DOMAINS
    }
    urls = ",".join(f"127.0.0.1:{n.port}" for n in cluster)
    config = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", files),
        backend="redis",
        redis={"url": f"redis+cluster://{urls}", "key_prefix": f"{tmp_path.name}:",
               "timeout_seconds": 2.0},
        reload={"watch": False},
        fixed_window_count_rejected=False,
    )
    svc = RateLimitService.from_settings(config)
    await svc.start()
    yield svc
    await svc.close()


async def test_domains_spread_over_every_master(cluster: list[RedisServer]) -> None:
    slots = {redis.Redis(port=cluster[0].port).cluster("keyslot", f"x{{{d}}}") for d in DOMAINS}
    owners = set()
    for node in cluster:
        for start, end, *_ in redis.Redis(port=node.port).cluster("slots"):
            owners |= {node.port for slot in slots if start <= slot <= end}
    assert len(owners) == 3  # the test below really touches all three masters


async def test_multi_descriptor_counts_are_exact(service: RateLimitService) -> None:
    for domain in DOMAINS:
        req = request(domain, [("a", "u1")], [("b", "u1")], [("c", "u1")])
        answers = [codes(await service.should_rate_limit(req)) for _ in range(6)]
        # a (4/h) refuses the 5th: from then on nothing is charged, b and c stay at 4.
        assert answers[:4] == [[OK, OK, OK]] * 4
        assert answers[4:] == [[OVER, OK, OK]] * 2
        peek = await service.should_rate_limit(request(domain, [("b", "u1")], [("c", "u1")]))
        assert [s.limit_remaining for s in peek.statuses] == [1, 0]


async def test_noscript_fallback_on_every_master(service: RateLimitService,
                                                 cluster: list[RedisServer]) -> None:
    for node in cluster:
        redis.Redis(port=node.port).script_flush()
    for domain in DOMAINS:
        response = await service.should_rate_limit(request(domain, [("a", "fresh")]))
        assert (response.overall_code, response.statuses[0].limit_remaining) == (OK, 3)


async def test_keys_land_in_one_slot_per_request(service: RateLimitService,
                                                 cluster: list[RedisServer]) -> None:
    await service.should_rate_limit(request("echo", [("a", "s")], [("b", "s")], [("c", "s")]))
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    try:
        prefix = service.settings.redis.key_prefix
        keys = await client.keys(f"{prefix}{{echo}}*", target_nodes=RedisCluster.ALL_NODES)
        assert len(keys) >= 4
        assert len({await client.cluster_keyslot(k) for k in keys}) == 1
    finally:
        await client.aclose()
