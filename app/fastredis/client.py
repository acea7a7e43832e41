"""The hot-path Redis client: one lazily (re)opened connection, commands, pipelines, scripts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.fastredis.address import Address, parse_address
from app.fastredis.connection import Connection
from app.fastredis.tls import explain_tls_failure

Arg = str | bytes | int | float
Command = Sequence[Arg]

# hiredis's stub types the argument as a 1-tuple; it takes any tuple of args.
pack_command = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class Script:
    """A Lua script run by its SHA1 (``EVALSHA``), sent whole (``EVAL``) when Redis lacks it.

    Called like redis-py's registered scripts: ``await script(keys=[...], args=[...])``.
    """

    __slots__ = ("body", "client", "sha")

    def __init__(self, client: FastRedis, body: str) -> None:
        self.client = client
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        client = self.client
        try:
            return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or its script cache was flushed: EVAL runs and caches it.
            return await client.execute("EVAL", self.body, len(keys), *keys, *args)


class FastRedis:
    """A Redis client for the per-request path: one multiplexed connection per event loop.

    ``timeout_s`` bounds every call (TimeoutError from redis-py's tree when it passes);
    ``connect_timeout_s`` (default: ``timeout_s``) bounds opening a connection, AUTH and
    SELECT included. The connection opens on first use and again after it is lost; callers
    that arrive while it opens share the attempt. Build it where the event loop runs (the
    app's lifespan) and close it there with :meth:`aclose`.
    """

    def __init__(
        self,
        url: str | Address,
        *,
        timeout_s: float,
        connect_timeout_s: float | None = None,
        dead_after_s: float | None = None,
        client_name: str | None = None,
    ) -> None:
        self.address = url if isinstance(url, Address) else parse_address(url)
        self.timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s or timeout_s
        # A peer silent this long is taken for dead: at least 1 s, 10 timeouts when longer.
        self._dead_after_s = dead_after_s or max(1.0, 10 * timeout_s)
        self._handshake = self.address.handshake()
        if client_name:
            self._handshake.append(("CLIENT", "SETNAME", client_name))
        self._conn: Connection | None = None
        self._opening: asyncio.Task[Connection] | None = None
        self._closed = False

    # -- commands ---------------------------------------------------------------------------
    def execute(self, *args: Arg) -> Awaitable[Any]:
        """Send one command; await its reply (bytes, int, list, None).

        An error reply raises redis-py's ResponseError (NoScriptError for NOSCRIPT).
        """
        conn = self._conn
        if conn is None:
            return self._open_then_send(pack_command(args), None)
        return conn.send(pack_command(args))

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands together and await all their replies, in order (not a transaction).

        Raises the first error reply after every reply has arrived.
        """
        if not commands:
            return []
        payload = b"".join([pack_command(tuple(command)) for command in commands])
        conn = self._conn
        replies: list[Any] = await (
            self._open_then_send(payload, len(commands))
            if conn is None
            else conn.send(payload, len(commands))
        )
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def register_script(self, body: str) -> Script:
        """A :class:`Script` bound to this client (nothing is sent until it is called)."""
        return Script(self, body)

    # -- the connection ---------------------------------------------------------------------
    async def _open_then_send(self, payload: bytes, count: int | None) -> Any:
        conn = await self.connection()
        return await conn.send(payload, count)

    async def connection(self) -> Connection:
        """The open connection, opening one first if needed (one attempt shared by all)."""
        if self._closed:
            raise RedisConnectionError("the Redis client is closed")
        conn = self._conn
        if conn is not None:
            return conn
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._open())
            opening.add_done_callback(self._opened)
        try:
            # Shielded: a caller that gives up does not cancel the attempt the others share.
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            if self._closed and opening.cancelled():
                raise RedisConnectionError("the Redis client is closed") from None
            raise
        except RedisError as exc:
            # Each caller gets its own exception object (tracebacks are per raise).
            raise type(exc)(str(exc)) from exc

    def _opened(self, task: asyncio.Task[Connection]) -> None:
        if self._opening is task:
            self._opening = None
        if not task.cancelled():
            task.exception()  # retrieved here too: nobody may be waiting any more

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        address = self.address
        conn = Connection(
            loop, timeout_s=self.timeout_s, dead_after_s=self._dead_after_s, on_lost=self._lost
        )
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if address.path is not None:
                    await loop.create_unix_connection(lambda: conn, address.path)
                else:
                    await loop.create_connection(
                        lambda: conn,
                        address.host,
                        address.port,
                        ssl=address.tls,
                        server_hostname=address.host if address.tls is not None else None,
                    )
                if self._handshake:
                    payload = b"".join([pack_command(c) for c in self._handshake])
                    replies = await conn.send(payload, len(self._handshake))
                    _check_handshake(self._handshake, replies)
        except BaseException as exc:
            conn.abort("could not open the connection")
            error = _connect_error(exc, address, self._connect_timeout_s)
            if error is None:
                raise
            raise error from exc
        if self._closed:
            await conn.aclose()
            raise RedisConnectionError("the Redis client is closed")
        if not conn.open:  # lost between the handshake's reply and here
            raise RedisConnectionError(f"connection to Redis at {address.where} lost")
        self._conn = conn
        return conn

    def _lost(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None

    async def ping(self) -> bool:
        """True when Redis answers PONG (raises like any call otherwise)."""
        return bool(await self.execute("PING") == b"PONG")

    async def aclose(self) -> None:
        """Close the connection (waiting callers fail with ConnectionError); idempotent."""
        self._closed = True
        opening = self._opening
        if opening is not None:
            opening.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()


def _connect_error(exc: BaseException, address: Address, timeout_s: float) -> RedisError | None:
    """redis-py's error for a failed connect, saying what to fix when we can tell (None: as is)."""
    where = address.where
    # A TLS handshake error, or a TLS alert that closed the connection during login.
    cause = exc.__cause__ if isinstance(exc, RedisConnectionError) else exc
    if address.tls is not None and cause is not None:
        explained = explain_tls_failure(cause, where, address.host)
        if explained is not None:
            return RedisConnectionError(explained)
    if isinstance(exc, TimeoutError):
        hint = ""
        if address.tls is not None:
            # A plain-text Redis waits for a command that a TLS hello never completes.
            hint = "; if the TLS handshake is what hangs, check that this port serves TLS"
        return RedisTimeoutError(
            f"Timeout connecting to Redis at {where} (after {timeout_s} s{hint})"
        )
    if address.tls is not None and isinstance(cause, ConnectionResetError):
        # TLS 1.3: a server that wants a client certificate decides after the handshake; its
        # alert may be lost to the reset when the login it never reads is already on the way.
        return RedisConnectionError(
            f"Redis at {where} reset the TLS connection during login; a server that requires "
            "client certificates does this when none (or an untrusted one) is sent: add "
            "ssl_certfile=/path/to/client.crt and ssl_keyfile=/path/to/client.key to the "
            "Redis URL, signed by a CA the server trusts"
        )
    if address.tls is None and isinstance(cause, ConnectionResetError):
        # What a TLS-only port does with plain-text commands.
        return RedisConnectionError(
            f"Redis at {where} reset the connection during login; if this port serves TLS, "
            "use rediss:// in the Redis URL"
        )
    if isinstance(exc, OSError):
        return RedisConnectionError(f"Error connecting to Redis at {where}: {exc}")
    return None


def _check_handshake(commands: list[tuple[str | int, ...]], replies: list[Any]) -> None:
    """Raise for a refused AUTH (AuthenticationError) or SELECT (ConnectionError)."""
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, ResponseError):
            if command[0] == "AUTH":
                raise AuthenticationError(f"Redis refused the URL's credentials: {reply}")
            raise RedisConnectionError(f"Redis refused {command[0]} on connect: {reply}")


__all__ = ["Arg", "Command", "FastRedis", "Script"]
