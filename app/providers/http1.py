"""A lean HTTP/1.1 client for upstream calls: an asyncio protocol, httptools' parser, a
keep-alive pool per origin.

Why it exists: every request the gateway serves makes one upstream call, and the general
purpose clients spend most of their time on generality. Measured on this project's machine
against the instant simulator (``python -m tests.benchmarks.bench_http_client``): aiohttp
~240 µs of CPU per POST, this client a fraction of it (numbers in the README, Performance).

What it does, and only that: ``POST`` with a body (``Host`` and ``Content-Length`` added),
the status, the headers (lower-cased names), the body whole or as it arrives (chunked
transfer-encoding decoded, reading paused while the consumer is behind), a connect timeout
and a read timeout per wait for bytes, TLS for ``https://`` (the system's trust store), and
connections kept alive and reused.

A ``POST`` is never sent twice once it may have reached the upstream: a generation that ran
(and was billed) must not silently run again. So a pooled connection is reused only while it
has been idle less than ``keepalive_s`` (and less than the server's ``Keep-Alive: timeout``
minus a second, when it announces one), so the request does not race the server closing it;
one known to be closed (its EOF or close seen by the loop) is skipped at checkout; and the
request is resent, on a fresh connection, only when the write to a pooled one failed at once
(nothing of it left). A connection that closes after the request was written, before any
answer byte, is a :class:`TransportError` with ``request_sent=True``: the reliability walk
decides what to do with it (README, Reliability). Checking all this costs flag reads, no
syscall per request: an EOF that reached the kernel but not yet the loop is not seen.

What it deliberately does not do: redirects, proxies, cookies, compression (no
``Accept-Encoding`` is sent, so servers answer in identity), HTTP/2, ``100-continue``.
Upstreams are LLM APIs configured by the operator; none of those are needed there.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit

import httptools

from app.providers.http import RawResponse, Timeouts, TransportError, TransportTimeout

_HIGH_WATER = 256 * 1024  # buffered body bytes before reading pauses (streams)
_MAX_IDLE_PER_ORIGIN = 256
# Taken off a server's Keep-Alive timeout hint: our idle clock starts after its own, and the
# request still has to travel (undici's keepAliveTimeoutThreshold is the same second).
_HINT_MARGIN_S = 1.0


class _Origin:
    """Where a URL's connections go, parsed once per URL."""

    __slots__ = ("host", "key", "path", "port", "prefix", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(
                f"unsupported upstream URL scheme or host: {parts.scheme!r}", request_sent=False
            )
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.key = (self.tls, self.host, self.port)
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        authority = self.host if default else f"{self.host}:{self.port}"
        if ":" in self.host:  # IPv6 literal
            authority = f"[{self.host}]" if default else f"[{self.host}]:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.prefix = f"POST {self.path} HTTP/1.1\r\nhost: {authority}\r\n"


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TransportTimeout("read timed out", "read"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        # The body parts of the current response. httptools calls ``on_body`` once per
        # chunk of a chunked body (one per SSE event for most upstreams, 250+ per long
        # stream): it is the list's own ``append``, so no Python frame runs per chunk; the
        # accounting and the wake-up happen once per network read, in data_received. The
        # parser looks its callbacks up when it is created, so this comes first, and the
        # list is cleared in place, never replaced.
        self.chunks: list[bytes] = []
        self.on_body: Callable[[bytes], None] = self.chunks.append
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._watch_s = 0.0
        self._wait_started = 0.0
        self._paused = False
        self.lost = False
        self.expires = 0.0  # monotonic time after which this idle connection is not reused
        self._begin()

    def _begin(self) -> None:
        self.unwatch()  # a new request on this connection: no watchdog of an earlier one
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks.clear()
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.busy = False

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.busy and not self.complete:
            te = self.headers.get("transfer-encoding", "")
            if self.headers_done and "content-length" not in self.headers and "chunked" not in te:
                self.complete = True  # a body delimited by the connection closing
            elif exc is not None:
                self.error = exc
            elif self.headers_done:
                self.error = ConnectionResetError("the upstream closed the connection mid-body")
            else:
                self.error = ConnectionResetError(
                    "the upstream closed the connection after the request was sent, before "
                    "answering (not resent: it may have been processed)"
                )
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes on an idle connection: it is not safe to reuse
            self.lost = True
            if self.transport is not None:
                self.transport.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            if self.transport is not None:
                self.transport.close()
            self._wake()
            return
        if self.chunks:  # body bytes arrived (on_body appended them)
            # Counted by the read, framing included: a high-water mark, not a body size.
            self.buffered += len(data)
            if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def eof_received(self) -> bool:
        return False  # close; connection_lost settles the response

    # -- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- request side --------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, data: bytes) -> bool:
        """Write the request. False when nothing of it can have reached the peer: the
        connection was known closed, or the write failed at once (the transport's first
        ``send`` raised and it began closing; a write that could not complete at once is
        buffered and any later failure counts as possibly delivered). True otherwise."""
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            return False
        self._begin()
        self.busy = True
        transport.write(data)
        return not transport.is_closing()

    async def wait(self, seconds: float) -> None:
        """Until something arrives (headers, body, the end, an error) or ``seconds`` pass
        (:class:`TransportTimeout`, phase ``read``). One timer, no task: cheaper than
        ``asyncio.timeout`` on a path taken once per network read."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        handle = self._loop.call_later(seconds, _expire, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    # -- a streamed body: one watchdog timer, not one per wait ------------------------------
    def watch(self, seconds: float) -> None:
        """Start the read watchdog of a streamed body: each :meth:`wait_body` fails with
        :class:`TransportTimeout` after ``seconds`` without bytes, as :meth:`wait` does,
        but one timer serves the whole stream (arming and cancelling a timer per wait
        costs ~3 µs, paid on every token of a paced stream). Stop it with :meth:`unwatch`."""
        self.unwatch()
        self._watch_s = seconds
        self._wait_started = self._loop.time()
        self._watch = self._loop.call_later(seconds, self._watchdog)

    def unwatch(self) -> None:
        """Stop the watchdog. Called when the response is released, not only when the body's
        iterator is closed: a consumer that stops early (``break`` at [DONE]) leaves that
        iterator to be closed later by the loop, after the connection may be serving a
        request whose waits the watchdog must not judge."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _watchdog(self) -> None:
        waiter = self._waiter
        now = self._loop.time()
        if waiter is None or waiter.done():  # not waiting: look again a full period on
            self._watch = self._loop.call_at(now + self._watch_s, self._watchdog)
            return
        deadline = self._wait_started + self._watch_s
        if now < deadline:  # this wait started after the timer was armed
            self._watch = self._loop.call_at(deadline, self._watchdog)
            return
        self._watch = None
        waiter.set_exception(TransportTimeout("read timed out", "read"))

    async def wait_body(self) -> None:
        """Until something arrives, under the watchdog (:meth:`watch`)."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._wait_started = self._loop.time()
        try:
            await waiter
        finally:
            self._waiter = None

    def check(self) -> None:
        if self.error is not None:
            error = self.error
            raise TransportError(f"{type(error).__name__}: {error}") from error

    def take(self) -> bytes:
        """The body bytes received so far (reading resumes if it was paused)."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.lost
            and self.error is None
            and not self._paused  # a paused socket would never deliver the next answer
        )

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Http1Stream:
    """A response whose body is read as it arrives."""

    def __init__(self, conn: _Connection, read_timeout: float) -> None:
        self._conn = conn
        self._read = read_timeout
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        conn.watch(self._read)
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.complete:
                conn.unwatch()
                return
            conn.check()
            await conn.wait_body()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


class Http1Backend:
    """The :class:`~app.providers.http.HTTPBackend` on the lean client (production default)."""

    def __init__(
        self,
        max_connections: int = 512,
        keepalive_s: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = asyncio.Semaphore(max_connections)
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[bool, str, int], deque[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._tls = ssl_context  # None: the system's trust store, made on first https use
        self._open: set[_Connection] = set()

    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _Origin(url)
        return origin

    def _request(self, origin: _Origin, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [origin.prefix, f"content-length: {len(body)}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise TransportError(
                    f"header {name!r} contains a line break; refusing to send", request_sent=False
                )
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1") + body

    async def _connect(self, origin: _Origin, seconds: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError as exc:
            raise TransportTimeout(f"connect timed out after {seconds:g} s", "connect") from exc
        except OSError as exc:
            raise TransportError(
                f"connect failed: {type(exc).__name__}", request_sent=False
            ) from exc
        self._open.add(conn)
        return conn

    def _pooled(self, origin: _Origin) -> _Connection | None:
        """An idle connection that is neither expired nor known to be closed (those are
        dropped on the way: no attempt is spent on them)."""
        idle = self._idle.get(origin.key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # most recently used first: the likeliest to be alive
            transport = conn.transport
            if (
                now < conn.expires
                and not conn.lost
                and transport is not None
                and not transport.is_closing()  # its EOF was read: closing, not yet lost
            ):
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _hinted_limit(self, hint: str) -> float:
        """How long a connection may idle given the server's ``Keep-Alive`` header:
        ``keepalive_s``, or less if it announces a shorter ``timeout`` (minus a margin)."""
        for param in hint.split(","):
            name, _, value = param.partition("=")
            if name.strip().lower() == "timeout":
                try:
                    return min(self._keepalive_s, float(value.strip()) - _HINT_MARGIN_S)
                except ValueError:
                    break
        return self._keepalive_s

    def _release(self, origin: _Origin, conn: _Connection) -> None:
        if conn.reusable:
            hint = conn.headers.get("keep-alive")  # rarely sent: one lookup when it is not
            limit = self._keepalive_s if hint is None else self._hinted_limit(hint)
            if limit <= 0:  # the server closes it before it could safely be reused
                self._discard(conn)
                return
            conn.busy = False
            conn.expires = time.monotonic() + limit
            idle = self._idle.setdefault(origin.key, deque())
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
                return
        self._discard(conn)

    async def _exchange(self, origin: _Origin, request: bytes, timeouts: Timeouts) -> _Connection:
        """Send the request; return the connection once the response's headers are in.

        Sent a second time only if the write to a pooled connection failed at once; once
        written, the request is never resent (module docstring)."""
        conn = self._pooled(origin)
        if conn is not None and not conn.send(request):
            self._discard(conn)  # nothing of the request left: a fresh connection may send it
            conn = None
        if conn is None:
            conn = await self._connect(origin, timeouts.connect)
            if not conn.send(request):
                self._discard(conn)
                raise TransportError(
                    "the upstream closed a new connection before the request could be sent",
                    request_sent=False,
                )
        try:
            while not conn.headers_done:
                conn.check()
                await conn.wait(timeouts.read)
        except BaseException:
            self._discard(conn)
            raise
        return conn

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawResponse:
        origin = self._origin(url)
        request = self._request(origin, body, headers)
        async with self._limit:
            conn = await self._exchange(origin, request, timeouts)
            try:
                parts: list[bytes] = []
                while not conn.complete:
                    if conn.buffered > _HIGH_WATER:
                        parts.append(conn.take())  # reading pauses past this: resume it
                    conn.check()
                    await conn.wait(timeouts.read)
                parts.append(conn.take())
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                response = RawResponse(conn.status, conn.headers, body)
            except BaseException:
                self._discard(conn)
                raise
            self._release(origin, conn)
            return response

    @asynccontextmanager
    async def stream(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> AsyncIterator[Http1Stream]:
        origin = self._origin(url)
        request = self._request(origin, body, headers)
        async with self._limit:
            conn = await self._exchange(origin, request, timeouts)
            try:
                yield Http1Stream(conn, timeouts.read)
            finally:
                # An unfinished response is not reused: its connection is closed, so an
                # abandoned stream never leaves the upstream generating into a pooled socket.
                conn.unwatch()
                self._release(origin, conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
