"""Sentinel from the same URL setting: a real redis-server in sentinel mode in front of a master."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidegate.ratelimit.service import RateLimitService
from sidegate.ratelimit.settings import RateLimitSettings
from tests.conftest import RedisServer, free_port, wait_for_port
from tests.ratelimit.conftest import OK, OVER, request, write_rules


@pytest.fixture
def sentinel_port(tmp_path: Path, redis_server: RedisServer) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor primary 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = subprocess.Popen([redis_server.binary, str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        sentinel.terminate()
        sentinel.wait(10)


async def test_sentinel_url(tmp_path: Path, sentinel_port: int) -> None:
    config = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", {"s.yaml": (
            "domain: s\ndescriptors:\n  - key: k\n    rate_limit: "
            "{requests_per_unit: 2, unit: hour}\n")}),
        backend="redis",
        redis={"url": f"redis+sentinel://127.0.0.1:{sentinel_port}/primary/0",
               "timeout_seconds": 2.0},
        reload={"watch": False},
        default_algorithm="token_bucket",  # no hour boundary can reset the count mid-test
    )
    service = RateLimitService.from_settings(config)
    await service.start()
    try:
        req = request("s", [("k", "v")])
        answers = [(await service.should_rate_limit(req)).overall_code for _ in range(3)]
        assert answers == [OK, OK, OVER]
        assert service.backend.up  # type: ignore[union-attr]
    finally:
        await service.close()
