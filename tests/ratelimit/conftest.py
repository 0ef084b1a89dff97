"""Rate-limit fixtures: rule directories, request builders, services on memory and real Redis."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from sidegate.ratelimit.buckets.memory import MemoryBackend
from sidegate.ratelimit.config.loader import load_from_settings
from sidegate.ratelimit.service import RateLimitService
from sidegate.ratelimit.settings import RateLimitSettings

Entries = Iterable[tuple[str, str]]
_prefixes = itertools.count()


def descriptor(
    entries: Entries, *, hits: int | None = None, limit: tuple[int, int] | None = None
) -> ratelimit_pb2.RateLimitDescriptor:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        d.hits_addend.value = hits
    if limit is not None:
        d.limit.requests_per_unit, d.limit.unit = limit
    return d


def request(
    domain: str, *descriptors: ratelimit_pb2.RateLimitDescriptor | Entries, hits_addend: int = 0
) -> rls_pb2.RateLimitRequest:
    built = [
        d if isinstance(d, ratelimit_pb2.RateLimitDescriptor) else descriptor(d)
        for d in descriptors
    ]
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=built, hits_addend=hits_addend)


def write_rules(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


class FakeClock:
    """Microseconds since the epoch, advanced only by the test."""

    def __init__(self, start_us: int = 1_700_000_040_000_000) -> None:
        self.now = start_us

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1_000_000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


ServiceFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def make_service(
    tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[ServiceFactory]:
    """Build a started RateLimitService over rule files, on the parametrized backend."""
    started: list[RateLimitService] = []
    redis_url = request.getfixturevalue("redis_url") if backend_kind == "redis" else None

    async def factory(files: dict[str, str], **settings: Any) -> RateLimitService:
        rules_dir = write_rules(tmp_path / f"rules{len(started)}", files)
        config: dict[str, Any] = {
            "rules_dir": rules_dir,
            "backend": backend_kind,
            "reload": {"watch": False},
            **settings,
        }
        if backend_kind == "redis":
            # A fresh key prefix per service: tests never see each other's counters.
            config["redis"] = {
                "url": redis_url,
                "key_prefix": f"t{next(_prefixes)}-{tmp_path.name}:",
                "timeout_seconds": 2.0,
                **settings.get("redis", {}),
            }
        service = RateLimitService.from_settings(RateLimitSettings(**config))
        await service.start()
        started.append(service)
        return service

    yield factory
    for service in started:
        await service.close()


def memory_service(
    tmp_path: Path, files: dict[str, str], clock: FakeClock, **settings: Any
) -> RateLimitService:
    """A service on the in-memory backend driven by a controllable clock."""
    config = RateLimitSettings(
        rules_dir=write_rules(tmp_path / "rules", files), reload={"watch": False}, **settings
    )
    return RateLimitService(config, load_from_settings(config), MemoryBackend(clock=clock))


def codes(response: rls_pb2.RateLimitResponse) -> list[int]:
    return [s.code for s in response.statuses]


OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
UNKNOWN = rls_pb2.RateLimitResponse.UNKNOWN
