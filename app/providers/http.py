"""The upstream HTTP client behind the provider adapters, with two interchangeable backends.

Adapters speak only this small interface (``post`` and ``stream``) and only see the two
transport errors below, so they never import an HTTP library. Backends:

- :class:`~app.providers.http1.Http1Backend` (production default): a lean HTTP/1.1 client
  (asyncio protocol + httptools parser). ``python -m tests.benchmarks.bench_http_client``:
  ~0.10 ms of CPU per JSON call against aiohttp's ~0.23 ms and httpx's ~1.1 ms.
- :class:`AiohttpBackend`: one pooled ``aiohttp.ClientSession`` (``PARETO_HTTP_CLIENT=aiohttp``).
- :class:`HttpxBackend`: one pooled ``httpx.AsyncClient``; used by the adapter tests (respx
  mocks httpx) and selectable with ``PARETO_HTTP_CLIENT=httpx``.

Timeouts: ``connect`` bounds connection set-up, ``read`` bounds each wait for bytes (for a
stream, the first token and every gap after it; for a non-stream, the whole answer).

Keep-alive and replays (README, Reliability: "Upstream connections"). Every backend reuses an
idle connection for at most ``keepalive_s`` (``PARETO_HTTP_KEEPALIVE_S``, 4 s: below the 5 s
default idle timeout of uvicorn, Node, Apache), skips pooled connections it knows are
closed, and never sends a ``POST`` a second time once it may have reached the upstream; such
a failure is a :class:`TransportError` with ``request_sent=True`` for the reliability walk.
They differ in how they know a pooled connection is closed: http1 and aiohttp read the flags
their event-loop protocol set (an EOF the loop has not processed yet is not seen), httpx polls
the socket at checkout (one syscall per request, sees an unprocessed EOF too). Only http1
honours an upstream's ``Keep-Alive: timeout=N`` hint and resends on a fresh connection when
the write to a pooled one failed at once (nothing left: plain TCP only).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx


class TransportError(Exception):
    """The connection failed or broke (refused, reset, closed mid-body).

    ``request_sent`` is False only when the request provably never reached the upstream
    (the connection could not be made, or the write failed before a byte left); True when
    it may have. A request that may have been sent must not be replayed silently: the
    upstream may be running (and billing) the generation already.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class TransportTimeout(TransportError):
    """A timeout; ``phase`` is ``connect`` or ``read``."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message, request_sent=phase != "connect")
        self.phase = phase


@dataclass(slots=True, frozen=True)
class Timeouts:
    connect: float
    read: float


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class RawStream(Protocol):
    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...


class HTTPBackend(Protocol):
    """What an adapter needs from an HTTP client."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawResponse: ...

    def stream(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> AbstractAsyncContextManager[RawStream]: ...

    async def aclose(self) -> None: ...


# -- aiohttp ------------------------------------------------------------------------------


def _aiohttp_error(exc: BaseException, started: bool) -> TransportError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportTimeout(f"connect timed out: {type(exc).__name__}", "connect")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return TransportTimeout(f"read timed out: {type(exc).__name__}", "read")
    # Only a failed connect proves the request never left; a ServerDisconnectedError or an
    # OSError after that may follow a delivered request (aiohttp itself does not retry a POST).
    sent = not isinstance(exc, aiohttp.ClientConnectorError)
    return TransportError(f"{type(exc).__name__}", request_sent=sent)


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, True) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, True) from exc


class AiohttpBackend:
    """A pooled aiohttp session (created lazily, inside the running loop)."""

    def __init__(self, max_connections: int = 512, keepalive_s: float = 4.0) -> None:
        self._limit = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit, keepalive_timeout=self._keepalive_s, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )
        return self._session

    @staticmethod
    def _timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.connect,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawResponse:
        try:
            async with self._client().post(
                url,
                data=body,
                headers=headers,
                timeout=self._timeout(timeouts),
                allow_redirects=False,
            ) as response:
                data = await response.read()
                return RawResponse(response.status, response.headers, data)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, False) from exc

    @asynccontextmanager
    async def stream(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> AsyncIterator[RawStream]:
        try:
            response = await self._client().post(
                url,
                data=body,
                headers=headers,
                timeout=self._timeout(timeouts),
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _aiohttp_error(exc, False) from exc
        try:
            yield _AiohttpStream(response)
        finally:
            # Closing (not releasing) an unfinished response drops its connection, so an
            # abandoned stream never leaves the upstream generating into a pooled socket.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# -- httpx --------------------------------------------------------------------------------


def _httpx_error(exc: httpx.HTTPError) -> TransportError:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return TransportTimeout(f"connect timed out: {type(exc).__name__}", "connect")
    if isinstance(exc, httpx.TimeoutException):
        return TransportTimeout(f"read timed out: {type(exc).__name__}", "read")
    # Only a failed connect proves the request never left (httpcore resends on another
    # connection only when the pooled one was unusable before anything was written).
    sent = not isinstance(exc, httpx.ConnectError)
    return TransportError(type(exc).__name__, request_sent=sent)


class _HttpxStream:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.aiter_bytes():
                yield data
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from exc


class HttpxBackend:
    """A pooled httpx client (respx can mock it)."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._owned = client is None
        self._client = client or httpx.AsyncClient()

    @staticmethod
    def _timeout(timeouts: Timeouts) -> httpx.Timeout:
        return httpx.Timeout(
            connect=timeouts.connect,
            read=timeouts.read,
            write=timeouts.connect,
            pool=timeouts.connect,
        )

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawResponse:
        try:
            response = await self._client.post(
                url, content=body, headers=dict(headers), timeout=self._timeout(timeouts)
            )
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from exc
        return RawResponse(response.status_code, response.headers, response.content)

    @asynccontextmanager
    async def stream(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> AsyncIterator[RawStream]:
        request = self._client.build_request(
            "POST", url, content=body, headers=dict(headers), timeout=self._timeout(timeouts)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _httpx_error(exc) from exc
        try:
            yield _HttpxStream(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


def make_backend(kind: str, max_connections: int, keepalive_s: float = 4.0) -> HTTPBackend:
    """``http1`` (default, :mod:`app.providers.http1`), ``aiohttp`` or ``httpx``; the backend
    owns its pool, whose idle connections are reused for at most ``keepalive_s``."""
    if kind == "http1":
        from app.providers.http1 import Http1Backend

        return Http1Backend(max_connections=max_connections, keepalive_s=keepalive_s)
    if kind == "httpx":
        backend = HttpxBackend()
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_s,
        )
        backend._client = httpx.AsyncClient(limits=limits)
        return backend
    return AiohttpBackend(max_connections=max_connections, keepalive_s=keepalive_s)


def as_backend(http: HTTPBackend | httpx.AsyncClient) -> HTTPBackend:
    """Adapters accept a backend, or a bare httpx client (tests mock it with respx)."""
    if isinstance(http, httpx.AsyncClient):
        return HttpxBackend(http)
    return http
