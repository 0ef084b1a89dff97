"""Buckets in Redis: one Lua script (EVALSHA, NOSCRIPT fallback) per request.

One URL setting picks the deployment: ``redis://`` / ``rediss://`` / ``unix://`` standalone
(one pipelined connection, ``redis_pipeline.py``), ``redis+cluster://h:p[,h:p]`` Cluster and
``redis+sentinel://h:p[,h:p]/<master>[/<db>]`` Sentinel (redis.asyncio, which knows the
topology).
"""

from __future__ import annotations

import asyncio
import hashlib
import traceback
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sidegate.common import deadline
from sidegate.ratelimit.buckets.base import (
    BackendUnavailable,
    BucketError,
    BucketRequest,
    BucketResult,
)
from sidegate.ratelimit.buckets.redis_pipeline import STANDALONE_SCHEMES, NeverSent, PipelinedRedis
from sidegate.ratelimit.settings import RedisSettings

_ALGORITHM_CODES = {"token_bucket": "1", "fixed_window": "2"}

# Errors about the keys of one request, not about Redis: the script's own check of what it
# reads ("SIDEGATE_BADKEY <i>"), a command on a key of another type, a Lua runtime error.
_BAD_KEY = "SIDEGATE_BADKEY"
_PER_KEY_ERRORS = ("WRONGTYPE", "user_script", "Error running script")

# Where redis-py opens a connection. An error raised inside these frames happened before any
# byte of the command was written, so sending the command again cannot charge twice.
_CONNECT_FRAMES = frozenset({"connect", "connect_check_health", "_connect"})
_CONNECTION_MODULE = "redis/asyncio/connection.py"


class DeadlineReached(BackendUnavailable):
    """The gRPC call's remaining time, shorter than the Redis timeout, ran out first.

    The call gets its failure mode, but Redis is not marked down for it.
    """

    backend_healthy = True


def _never_sent(exc: BaseException) -> bool:
    """True for a connection error or connect timeout raised while connecting, before the
    command was sent.

    redis-py wraps connect and send errors in the same ConnectionError (both chained to an
    OSError), and connect and read timeouts in the same TimeoutError, so the traceback is the
    one place that says which phase failed.
    """
    if isinstance(exc, NeverSent):
        return True
    if not isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return False
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        code = frame.f_code
        if code.co_name in _CONNECT_FRAMES and code.co_filename.replace("\\", "/").endswith(
            _CONNECTION_MODULE
        ):
            return True
    return False


def _per_key_error(exc: ResponseError) -> BucketError | None:
    message = str(exc)
    if message.startswith(_BAD_KEY):
        _, _, position = message.partition(" ")
        index = int(position) - 1 if position.strip().isdigit() else None
        return BucketError("a bucket key holds a value sidegate did not write", index)
    if any(marker in message for marker in _PER_KEY_ERRORS):
        # Redis' message names the script and the failing command, never the key's content.
        return BucketError(f"redis: {message.splitlines()[0][:200]}")
    return None


def take_script() -> str:
    return resources.files("sidegate.ratelimit.buckets").joinpath("lua/take.lua").read_text("utf-8")


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        hosts.append((host or part, int(port) if port else default_port))
    return hosts


def client_from_settings(settings: RedisSettings) -> Any:
    url = settings.url
    parts = urlsplit(url)
    if parts.scheme in STANDALONE_SCHEMES:
        return PipelinedRedis(
            url,
            socket_timeout=settings.timeout_seconds,
            connect_timeout=settings.connect_timeout_seconds,
        )
    common: dict[str, Any] = {
        "socket_timeout": settings.timeout_seconds,
        "socket_connect_timeout": settings.connect_timeout_seconds,
        # redis-py retries nothing: by default it sends a command again after a TimeoutError or
        # a broken connection, and a script that had already run would be charged twice.
        # RedisBackend retries by itself, only when the command was certainly never sent.
        "retry": Retry(NoBackoff(), 0),
    }
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    if parts.scheme == "redis+cluster":
        nodes = [ClusterNode(host, port) for host, port in _hosts(parts.netloc, 6379)]
        return RedisCluster(
            startup_nodes=nodes,
            password=password,
            username=username,
            max_connections=settings.max_connections,
            **common,
        )
    if parts.scheme == "redis+sentinel":
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel URL needs the master name: .../<master>[/<db>]")
        sentinel = Sentinel(_hosts(parts.netloc, 26379), sentinel_kwargs=dict(common), **common)
        return sentinel.master_for(
            path[0],
            db=int(path[1]) if len(path) > 1 else 0,
            password=password,
            username=username,
            max_connections=settings.max_connections,
        )
    raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")


class RedisBackend:
    name = "redis"

    def __init__(
        self, client: Any, key_prefix: str = "", timeout: float = 1.0, max_in_flight: int = 64
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.timeout = timeout
        # At most as many calls in flight as the pool has connections: a burst queues here
        # (inside the timeout) instead of failing with "too many connections".
        self._slots = asyncio.Semaphore(max_in_flight)
        self.script = take_script()
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisBackend:
        # The overall bound covers waiting for a pooled connection, connecting and the reply.
        bound = settings.timeout_seconds + settings.connect_timeout_seconds
        return cls(
            client_from_settings(settings), settings.key_prefix, bound, settings.max_connections
        )

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.script_load(self.script)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        await self.client.aclose()

    async def _run(self, keys: list[str], args: list[str | int]) -> Any:
        """EVALSHA; sent again only when it certainly never left (see ``_never_sent``)."""
        for attempt in (1, 2):
            try:
                return await self._evalsha(keys, args)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # A pooled connection that a Redis restart or failover broke, or a connect that
                # timed out: one new try, inside the same overall bound.
                if attempt == 2 or not _never_sent(exc):
                    raise
        raise AssertionError("unreachable")

    async def _evalsha(self, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or failed-over Redis forgot the script (NOSCRIPT: nothing ran).
            await self.client.script_load(self.script)
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)

    async def take(self, buckets: Sequence[BucketRequest]) -> list[BucketResult]:
        prefix = self.key_prefix
        keys = [prefix + b.key for b in buckets]
        args: list[str | int] = []
        for b in buckets:
            args += (
                _ALGORITHM_CODES[b.algorithm], b.limit, b.window_ms, b.burst, b.hits,
                1 if b.enforce else 0, 1 if b.always_charge else 2 if b.stop_increment else 0,
            )
        try:
            # The configured timeout, cut to what is left of the gRPC call.
            bound = deadline.bound(self.timeout)
        except deadline.DeadlineExceeded:
            raise DeadlineReached("redis: the call's deadline passed before asking") from None
        try:
            async with asyncio.timeout(bound), self._slots:
                raw = await self._run(keys, args)
        except ResponseError as exc:
            per_key = _per_key_error(exc)
            if per_key is not None:
                raise per_key from None
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            if bound < self.timeout:
                raise DeadlineReached(
                    f"redis: no answer within the call's remaining {bound:.3f} s"
                ) from None
            raise BackendUnavailable(f"redis: no answer within {bound:.3f} s") from None
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from None
        return [
            BucketResult(bool(raw[i]), int(raw[i + 1]), int(raw[i + 2]), int(raw[i + 3]))
            for i in range(0, len(raw), 4)
        ]
