"""The pipelined standalone Redis connection: replies reach the call that asked, whatever
times out, breaks or arrives garbled; set-up (AUTH, SELECT, Unix sockets) as redis-py does it.

Against real redis-server processes, plus a fake loopback server for hostile replies, on
asyncio's loop and on uvloop (this directory's conftest). Assertions are on answers and
charges, never on wall time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from sidegate.common import deadline
from sidegate.ratelimit.buckets.base import BackendUnavailable, BucketRequest
from sidegate.ratelimit.buckets.redis import DeadlineReached, RedisBackend, client_from_settings
from sidegate.ratelimit.buckets.redis_pipeline import (
    ConnectionLost,
    NeverSent,
    PipelinedRedis,
)
from sidegate.ratelimit.settings import RedisSettings
from tests.conftest import RedisServer


def bucket(key: str, limit: int = 1000, hits: int = 1) -> BucketRequest:
    return BucketRequest(key, "token_bucket", limit, 3_600_000, limit, hits, True, False, False)


@pytest.fixture
async def pipelined(redis_server: RedisServer) -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis(redis_server.url, socket_timeout=5.0, connect_timeout=2.0)
    yield client
    await client.aclose()


@pytest.fixture
async def backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    """RedisBackend over the pipelined connection, started (script loaded), keys under t:."""
    started = RedisBackend(
        PipelinedRedis(redis_server.url, socket_timeout=5.0, connect_timeout=2.0), "t:", 5.0
    )
    await started.start()
    yield started
    await started.close()


def test_standalone_urls_get_the_pipelined_connection() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/1", "unix:///run/r.sock"):
        assert isinstance(client_from_settings(RedisSettings(url=url)), PipelinedRedis)


async def test_concurrent_calls_each_get_their_own_reply(pipelined: PipelinedRedis) -> None:
    """Hundreds of commands in flight on one connection: every reply goes to its caller."""
    await pipelined.execute_command("DEL", *(f"pipe:{i}" for i in range(300)))
    results = await asyncio.gather(
        *(pipelined.execute_command("INCRBY", f"pipe:{i}", i + 1) for i in range(300))
    )
    assert results == [i + 1 for i in range(300)]


async def test_buckets_admit_exactly_under_concurrency(backend: RedisBackend) -> None:
    results = await asyncio.gather(*(backend.take([bucket("b", limit=50)]) for _ in range(200)))
    assert sum(result[0].allowed for result in results) == 50


async def test_a_call_given_up_on_does_not_shift_the_replies(
    redis_server: RedisServer, pipelined: PipelinedRedis
) -> None:
    """A call whose caller stopped waiting (deadline shorter than the socket timeout) keeps
    the connection; its late reply is dropped, not handed to the next call."""
    admin = redis.Redis.from_url(redis_server.url)
    await pipelined.execute_command("SET", "late:a", 100)
    await pipelined.execute_command("SET", "late:b", 200)
    admin.execute_command("CLIENT", "PAUSE", 10000, "WRITE")  # writes held until UNPAUSE
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pipelined.execute_command("INCRBY", "late:a", 1)
        second = asyncio.create_task(pipelined.execute_command("INCRBY", "late:b", 5))
        await asyncio.sleep(0)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    assert await second == 205
    assert await pipelined.execute_command("GET", "late:a") == b"101"  # it ran, once
    admin.close()


async def test_no_reply_past_the_socket_timeout_closes_the_connection(
    redis_server: RedisServer,
) -> None:
    """As redis-py drops a connection whose read timed out: the calls on it fail as lost
    (never resent), and the next call connects again."""
    client = PipelinedRedis(redis_server.url, socket_timeout=0.1, connect_timeout=2.0)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        await client.execute_command("SET", "pause:k", "1")
        admin.execute_command("CLIENT", "PAUSE", 10000, "WRITE")  # held until UNPAUSE
        stuck = asyncio.create_task(client.execute_command("INCR", "pause:k"))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.execute_command("INCR", "pause:k")
        with pytest.raises(ConnectionLost):
            await stuck
        admin.execute_command("CLIENT", "UNPAUSE")
        assert await client.execute_command("GET", "pause:k") in (b"1", b"2", b"3")
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await client.aclose()


async def test_a_killed_connection_fails_its_calls_and_is_replaced(
    redis_server: RedisServer, pipelined: PipelinedRedis
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    assert await pipelined.execute_command("PING") == b"PONG"
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    with pytest.raises(ConnectionLost):
        for _ in range(500):  # the close may take a moment to reach this side
            await pipelined.execute_command("PING")
            await asyncio.sleep(0.01)
    assert await pipelined.execute_command("PING") == b"PONG"
    admin.close()


async def test_redis_down_is_never_sent_and_retried_once(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "down")  # a free port nobody listens on
    client = PipelinedRedis(server.url, socket_timeout=0.5, connect_timeout=0.5)
    with pytest.raises(NeverSent):
        await client.execute_command("PING")
    backend = RedisBackend(client, "down:", timeout=1.0)
    attempts = []
    original = client._connect

    async def counting() -> object:
        attempts.append(1)
        return await original()

    client._connect = counting  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable):
        await backend.take([bucket("x")])
    assert len(attempts) == 2  # the command certainly never left: one more try
    server.start()
    try:
        assert (await backend.take([bucket("x")]))[0].allowed
    finally:
        await backend.close()
        server.stop()


async def test_noscript_is_loaded_again_and_nothing_is_charged_twice(
    backend: RedisBackend,
) -> None:
    await backend.client.execute_command("SCRIPT", "FLUSH")
    with pytest.raises(NoScriptError):
        await backend.client.evalsha(backend.sha, 0)
    assert (await backend.take([bucket("k", limit=10)]))[0].remaining == 9
    assert (await backend.take([bucket("k", limit=10)]))[0].remaining == 8


async def test_deadline_shorter_than_the_timeout_keeps_redis_up(
    redis_server: RedisServer, backend: RedisBackend
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.execute_command("CLIENT", "PAUSE", 10000, "WRITE")  # held until UNPAUSE
        try:
            with deadline.within_call(0.05), pytest.raises(DeadlineReached):
                await backend.take([bucket("d")])
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        # the connection survived; the given-up call ran once when Redis got to it
        assert (await backend.take([bucket("d", limit=1000)]))[0].remaining == 998
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


@pytest.fixture
def auth_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "auth", ("--requirepass", "s3cret-pw"))
    server.start()
    yield server
    server.stop()


async def test_password_and_database_from_the_url(auth_server: RedisServer) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{auth_server.port}/3"
    client = PipelinedRedis(url, socket_timeout=2.0, connect_timeout=2.0)
    try:
        await client.execute_command("SET", "db3:k", "v")
    finally:
        await client.aclose()
    admin = redis.Redis(port=auth_server.port, password="s3cret-pw", db=3)
    assert admin.get("db3:k") == b"v"
    assert redis.Redis(port=auth_server.port, password="s3cret-pw", db=0).get("db3:k") is None
    admin.close()


async def test_wrong_password_is_never_sent_and_not_quoted(auth_server: RedisServer) -> None:
    url = f"redis://:wrong-pw-123@127.0.0.1:{auth_server.port}/0"
    client = PipelinedRedis(url, socket_timeout=2.0, connect_timeout=2.0)
    with pytest.raises(NeverSent) as failure:
        await client.execute_command("PING")
    assert "wrong-pw-123" not in str(failure.value)
    await client.aclose()


async def test_unix_socket(tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "unix", ("--unixsocket", str(socket), "--unixsocketperm", "700")
    )
    server.start()
    try:
        for _ in range(100):
            if socket.exists():
                break
            await asyncio.sleep(0.05)
        client = PipelinedRedis(f"unix://{socket}?db=2", socket_timeout=2.0, connect_timeout=2.0)
        await client.execute_command("SET", "u:k", "v")
        await client.aclose()
        assert redis.Redis(port=server.port, db=2).get("u:k") == b"v"
    finally:
        server.stop()


async def _fake_redis(replies: list[bytes]) -> tuple[asyncio.base_events.Server, int]:
    """A loopback server that answers each command with the next canned (hostile) bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                if replies:
                    writer.write(replies.pop(0))
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_hostile_replies_fail_the_call_never_hang_or_crash() -> None:
    """Seeded garbage, truncated and oversized replies from a fake Redis: each call ends in a
    reply, a redis ResponseError/ConnectionError or its own timeout, and a later call still
    gets a fresh connection."""
    rng = random.Random(20261201)
    valid = [b":1\r\n", b"*4\r\n:1\r\n:9\r\n:0\r\n:0\r\n", b"-ERR nope\r\n", b"$3\r\nabc\r\n"]
    for _ in range(100):
        kind = rng.randrange(4)
        if kind == 0:
            reply = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 1:
            reply = rng.choice(valid)[: rng.randrange(1, 6)]  # truncated: the call times out
        elif kind == 2:
            reply = b"*" + str(rng.randrange(1, 10**6)).encode() + b"\r\n" + b":1\r\n" * 3
        else:
            reply = rng.choice(valid) * rng.randrange(1, 4)  # replies nobody asked for
        server, port = await _fake_redis([reply, b":1\r\n"])
        client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", socket_timeout=0.01,
                                connect_timeout=1.0)
        try:
            async with asyncio.timeout(0.02):
                await client.execute_command("EVALSHA", "0" * 40, 0)
        except (ResponseError, RedisConnectionError, TimeoutError):
            pass
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()


def test_url_parameters_the_connection_would_ignore_are_refused(tmp_path: Path) -> None:
    from sidegate.config import ConfigError, load_config

    config = tmp_path / "sidegate.yaml"
    config.write_text(
        "ratelimit:\n  backend: redis\n"
        "  redis: {url: 'rediss://127.0.0.1:6380/0?ssl_certfile=c.pem&health_check_interval=5'}\n"
    )
    with pytest.raises(ConfigError) as failure:
        load_config(config)
    message = str(failure.value)
    assert "ratelimit.redis.url" in message and "health_check_interval" in message
    assert "ssl_certfile" not in message.split("known:")[0]
