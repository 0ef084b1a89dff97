"""One Redis connection carrying every bucket call, pipelined: the standalone fast path.

Why not redis-py here: its asyncio client costs more per call than sidegate's whole
ShouldRateLimit logic. Each command takes a connection from the pool, packs its arguments in
Python, runs inside retry and timeout wrappers and reads through a StreamReader; measured with
``python -m bench.service_micro`` (whole ShouldRateLimit calls, 3 Redis buckets each, two
interleaved rounds), a call cost 197-298 µs of CPU through redis-py and 106-108 µs through this
module. envoyproxy/ratelimit pipelines its Redis calls for the same
reason (``REDIS_PIPELINE_WINDOW``). Packing and reply parsing stay in C (hiredis, which redis-py
already depends on); only the framing of requests to replies is written here: Redis answers the
commands of one connection in the order they were sent, so a FIFO of futures matches them.

Cluster and Sentinel deployments keep redis-py, which knows their topology.

It speaks redis-py's method signatures and raises redis-py's exceptions, so RedisBackend
drives either client the same way:
- ``NeverSent`` (a redis ConnectionError): the connection could not be opened or set up; nothing
  reached Redis, sending again is safe.
- ``ConnectionLost`` (a redis ConnectionError): the connection broke with the command possibly
  delivered; never resent.
- ``NoScriptError`` / ``ResponseError``: Redis answered with an error reply.
- A call the caller stops waiting for (its timeout) leaves the connection usable: its reply is
  read and dropped when it comes. When the oldest unanswered command has waited longer than
  ``socket_timeout``, the connection is closed and everything on it fails with ConnectionLost,
  as redis-py drops a connection whose read timed out; the next call connects again.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

STANDALONE_SCHEMES = ("redis", "rediss", "unix")
# The URL query parameters a standalone URL may carry (redis-py's names for the same things).
STANDALONE_QUERY_KEYS = frozenset(
    {"db", "password", "ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile"}
)


def unknown_query_keys(url: str) -> list[str]:
    """Query parameters of a standalone URL this connection would not honour."""
    parts = urlsplit(url)
    if parts.scheme not in STANDALONE_SCHEMES:
        return []
    return sorted(set(parse_qs(parts.query)) - STANDALONE_QUERY_KEYS)


class NeverSent(RedisConnectionError):
    """The connection could not be opened or set up: the command never left."""


class ConnectionLost(RedisConnectionError):
    """The connection broke (or was given up on) with the command possibly delivered."""


def _reply_error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


class _Pipe(asyncio.Protocol):
    """The connection: writes go out once per loop iteration, replies resolve futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._transport: Any = None  # asyncio's or uvloop's transport (not asyncio subclasses)
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(ConnectionLost(f"redis: protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:
                self.close(ConnectionLost("redis: a reply nobody asked for"))
                return
            future, _ = pending.popleft()
            if future.done():  # its caller stopped waiting
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_reply_error(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(ConnectionLost(f"redis: connection lost: {exc or 'closed by the server'}"))

    def _fail_all(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        self._out.clear()
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                # one instance per waiter: a shared one would collect every waiter's traceback
                future.set_exception(type(error)(*error.args))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise type(self.lost)(*self.lost.args)
        future = self._loop.create_future()
        self._pending.append((future, time.monotonic()))
        if not self._out:
            # Every command issued in this loop iteration goes out in one write.
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        return future

    def _flush(self) -> None:
        if self._out and self._transport is not None and self.lost is None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def oldest_wait(self) -> float:
        return time.monotonic() - self._pending[0][1] if self._pending else 0.0

    def close(self, error: Exception) -> None:
        self._fail_all(error)
        if self._transport is not None:
            self._transport.abort()


class _Target:
    """Where and how to connect, parsed once from a standalone URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in STANDALONE_SCHEMES:
            raise ValueError(f"not a standalone Redis URL: scheme {parts.scheme!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.password = unquote(parts.password) if parts.password else query.get("password")
        self.username = unquote(parts.username) if parts.username else None
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "unix":
            self.path: str | None = parts.path
            self.host, self.port = "", 0
            db = query.get("db", "0")
        else:
            self.path = None
            self.host = parts.hostname or "127.0.0.1"
            self.port = parts.port or 6379
            db = parts.path.strip("/") or query.get("db", "0")
        self.db = int(db)
        if parts.scheme == "rediss":
            self.ssl = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
            if query.get("ssl_cert_reqs", "required") == "none":
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
            if "ssl_certfile" in query:  # a client certificate (mutual TLS)
                self.ssl.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))

    def handshake(self) -> list[bytes]:
        commands: list[bytes] = []
        if self.password is not None:
            auth: tuple[str, ...] = (self.password,)
            if self.username:
                auth = (self.username, self.password)
            commands.append(hiredis.pack_command(("AUTH", *auth)))
        if self.db:
            commands.append(hiredis.pack_command(("SELECT", self.db)))
        return commands


class PipelinedRedis:
    """Commands to one standalone Redis over one pipelined connection, opened on first use
    and again after it is lost."""

    def __init__(self, url: str, *, socket_timeout: float, connect_timeout: float) -> None:
        self._target = _Target(url)
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self._pipe: _Pipe | None = None
        self._connecting: asyncio.Future[_Pipe] | None = None

    async def _connected(self) -> _Pipe:
        pipe = self._pipe
        if pipe is not None and pipe.lost is None:
            return pipe
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            # shield: a caller timing out must not cancel the connect the others wait for
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        target = self._target
        try:
            async with asyncio.timeout(self.connect_timeout):
                if target.path is not None:
                    _, pipe = await loop.create_unix_connection(lambda: _Pipe(loop), target.path)
                else:
                    _, pipe = await loop.create_connection(
                        lambda: _Pipe(loop), target.host, target.port, ssl=target.ssl
                    )
                for command in target.handshake():
                    await pipe.send(command)
        except (OSError, TimeoutError, ConnectionLost, ResponseError) as exc:
            # AUTH/SELECT failures say why; the password is never part of Redis' reply.
            raise NeverSent(f"redis: cannot connect: {type(exc).__name__}: {exc}") from None
        self._pipe = pipe
        return pipe

    async def execute_command(self, *args: str | int | bytes) -> Any:
        return await self.send_packed(hiredis.pack_command(args))

    async def send_packed(self, packed: bytes) -> Any:
        pipe = await self._connected()
        try:
            return await pipe.send(packed)
        except asyncio.CancelledError:
            if pipe.oldest_wait() > self.socket_timeout:
                pipe.close(ConnectionLost(
                    f"redis: no reply within {self.socket_timeout:.3f} s, connection closed"))
            raise

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str | int) -> Any:
        command = ("EVALSHA", sha, numkeys, *keys_and_args)
        return await self.send_packed(hiredis.pack_command(command))

    async def script_load(self, script: str) -> Any:
        return await self.send_packed(hiredis.pack_command(("SCRIPT", "LOAD", script)))

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._pipe is not None:
            self._pipe.close(ConnectionLost("redis: closed"))
            self._pipe = None
