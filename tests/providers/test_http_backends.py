"""Every upstream HTTP backend behaves the same on the wire events adapters depend on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.providers.http import (
    AiohttpBackend,
    HTTPBackend,
    HttpxBackend,
    Timeouts,
    TransportError,
    TransportTimeout,
    make_backend,
)
from app.providers.http1 import Http1Backend

T = Timeouts(connect=1.0, read=0.3)
KINDS = ["http1", "aiohttp", "httpx"]


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[HTTPBackend]:
    b: HTTPBackend
    if request.param == "http1":
        b = Http1Backend()
    else:
        b = AiohttpBackend() if request.param == "aiohttp" else HttpxBackend()
    yield b
    await b.aclose()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


_OPEN: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_server_sockets() -> AsyncIterator[None]:
    yield
    for writer in _OPEN:
        writer.transport.abort()
    _OPEN.clear()
    await asyncio.sleep(0)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _OPEN.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/chat/completions"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def ok_json(writer: asyncio.StreamWriter, body: bytes, status: int = 200) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nRetry-After: 3\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def test_post_returns_status_headers_body(backend: HTTPBackend) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        ok_json(writer, b'{"error":{"message":"slow down"}}', 429)
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server:
        response = await backend.post(url, b'{"a":1}', {"content-type": "application/json"}, T)
    assert response.status == 429
    assert response.headers["retry-after"] == "3"
    assert response.body == b'{"error":{"message":"slow down"}}'
    assert seen == [b'{"a":1}']


async def test_stream_yields_chunks_then_ends(backend: HTTPBackend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server, backend.stream(url, b"{}", {}, T) as stream:
        assert stream.status == 200
        data = b"".join([c async for c in stream.chunks()])
    assert data == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"


async def test_stream_cut_mid_body_is_transport_error(backend: HTTPBackend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        writer.transport.abort()

    server, url = await serve(handler)
    got = []
    async with server:
        with pytest.raises(TransportError):
            async with backend.stream(url, b"{}", {}, T) as stream:
                async for c in stream.chunks():
                    got.append(c)
    assert b"".join(got) == b"data: 1\n\n"


async def test_silent_upstream_is_read_timeout(backend: HTTPBackend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1)

    server, url = await serve(handler)
    async with server:
        with pytest.raises(TransportTimeout) as info:
            await backend.post(url, b"{}", {}, T)
    assert info.value.phase == "read"


async def test_refused_connection_is_transport_error_not_timeout(backend: HTTPBackend) -> None:
    server, url = await serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(TransportError) as info:
        await backend.post(url, b"{}", {}, T)
    assert not isinstance(info.value, TransportTimeout)
    assert info.value.request_sent is False  # nothing left: the walk may try it again


@pytest.mark.parametrize("reused", [False, True], ids=["new-connection", "pooled-connection"])
async def test_request_read_then_dropped_without_answer_is_delivered_once(
    backend: HTTPBackend, reused: bool
) -> None:
    # The upstream reads the whole request (it may be generating, and billing, the answer)
    # and closes without a byte of answer. Sending it again would run it twice: the caller
    # gets a TransportError saying it may have been sent, and the server saw it once. (On
    # a pooled connection http1 used to resend it on a fresh one: delivered twice.)
    delivered: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            delivered.append(await read_request(reader))
            if delivered[-1] == b"drop me":
                writer.close()
                return
            ok_json(writer, b'{"ok":true}')
            await writer.drain()

    server, url = await serve(handler)
    async with server:
        if reused:
            assert (await backend.post(url, b"first", {}, T)).body == b'{"ok":true}'
        with pytest.raises(TransportError) as info:
            await backend.post(url, b"drop me", {}, T)
        await asyncio.sleep(0.1)  # time for a resent copy to arrive, if one were sent
    assert delivered.count(b"drop me") == 1
    assert not isinstance(info.value, TransportTimeout)
    assert info.value.request_sent is True


async def test_pooled_connection_closed_by_the_upstream_while_idle_is_not_used(
    backend: HTTPBackend,
) -> None:
    # The upstream answers, then closes the idle keep-alive connection (its keep-alive
    # timeout) before the next request: that request goes on a new connection, once, and
    # succeeds.
    delivered: list[bytes] = []
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        delivered.append(await read_request(reader))
        ok_json(writer, b'{"n":%d}' % len(delivered))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    server, url = await serve(handler)
    async with server:
        assert (await backend.post(url, b"one", {}, T)).body == b'{"n":1}'
        await asyncio.wait_for(closed.wait(), 2)
        # The close is in the client's kernel; a turn of the loop lets it be read (http1 and
        # aiohttp learn it from their protocol's connection_lost; httpx polls the socket).
        await asyncio.sleep(0.05)
        assert (await backend.post(url, b"two", {}, T)).body == b'{"n":2}'
    assert delivered == [b"one", b"two"]


@pytest.mark.parametrize("kind", KINDS)
async def test_idle_connection_is_not_reused_past_the_keepalive_setting(kind: str) -> None:
    # PARETO_HTTP_KEEPALIVE_S reaches every backend: a connection idle longer is replaced,
    # so a request never races an upstream closing it at its own keep-alive timeout.
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            ok_json(writer, b"{}")
            await writer.drain()

    backend = make_backend(kind, 8, keepalive_s=0.3)
    server, url = await serve(handler)
    async with server:
        await backend.post(url, b"{}", {}, T)
        await backend.post(url, b"{}", {}, T)  # idle a moment: reused
        assert connections == 1
        await asyncio.sleep(0.5)  # idle past keepalive_s: not reused
        await backend.post(url, b"{}", {}, T)
        await backend.aclose()
    assert connections == 2


async def _paced_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Five events 0.15 s apart (each gap under T.read, together well over it), then a
    silence of 0.6 s (over it), then one more event."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(6):
        if i == 5:
            await asyncio.sleep(0.6)
        part = b"data: %d\n\n" % i
        writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.15)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def test_stream_read_timeout_counts_each_wait_not_the_whole_stream(
    backend: HTTPBackend,
) -> None:
    # The read timeout bounds each wait for bytes: a stream that keeps sending more often
    # than that runs for as long as it sends; a silence longer than it fails as a timeout.
    server, url = await serve(_paced_stream)
    got: list[bytes] = []
    async with server:
        with pytest.raises(TransportTimeout) as info:
            async with backend.stream(url, b"{}", {}, T) as stream:
                async for c in stream.chunks():
                    got.append(c)
    assert info.value.phase == "read"
    assert b"".join(got) == b"".join(b"data: %d\n\n" % i for i in range(5))


async def test_stream_consumer_slower_than_the_read_timeout_is_not_a_timeout(
    backend: HTTPBackend,
) -> None:
    # Time the consumer spends away (a slow client) is not a wait for the upstream: the
    # upstream sent everything at once, the consumer pauses 0.5 s (over T.read) per chunk.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        part = b"data: x\n\n"
        writer.write((f"{len(part):x}\r\n".encode() + part + b"\r\n") * 3 + b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(handler)
    async with server, backend.stream(url, b"{}", {}, T) as stream:
        data = b""
        async for c in stream.chunks():
            data += c
            await asyncio.sleep(0.5)
    assert data == b"data: x\n\n" * 3


async def test_http1_stream_left_early_does_not_time_out_the_next_call_on_its_connection() -> None:
    # http1 only (it reuses the connection; its stream has a read watchdog). The consumer
    # stops at its first chunk and keeps the iterator (not closed yet); the connection goes
    # back to the pool. The next call on it waits longer than the stream's read timeout for
    # an answer within its own: no watchdog of the stream may judge it (it did: a spurious
    # read timeout).
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        part = b"data: x\n\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(part):x}\r\n".encode()
            + part
            + b"\r\n0\r\n\r\n"
        )
        await writer.drain()
        await read_request(reader)
        await asyncio.sleep(0.6)  # over the stream's read timeout (T.read), under the call's
        ok_json(writer, b'{"ok":true}')
        await writer.drain()

    server, url = await serve(handler)
    backend = Http1Backend()
    async with server:
        async with backend.stream(url, b"{}", {}, T) as stream:
            it = stream.chunks()
            assert await it.__anext__() == b"data: x\n\n"
        slow = Timeouts(connect=1.0, read=2.0)
        response = await backend.post(url, b"{}", {}, slow)
        await it.aclose()
        await backend.aclose()
    assert response.body == b'{"ok":true}'
