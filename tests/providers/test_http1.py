"""The lean HTTP/1.1 client's own promises: connections reused, never reused when unsafe or
idle too long for the server's Keep-Alive hint, a request resent only when its write to a
pooled connection failed at once, flow control, TLS, header injection refused.

(The behaviour every backend shares is in test_http_backends.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from app.providers.http import Timeouts, TransportError
from app.providers.http1 import Http1Backend

T = Timeouts(connect=1.0, read=2.0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server that counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, handler: Handler, tls: ssl.SSLContext | None = None) -> str:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.writers.append(writer)
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handler(reader, writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        return f"{scheme}://localhost:{port}/v1/chat/completions"

    async def stop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    yield s
    await s.stop()


@pytest.fixture
async def backend() -> AsyncIterator[Http1Backend]:
    b = Http1Backend()
    yield b
    await b.aclose()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def test_keep_alive_connection_is_reused(server: Server, backend: Http1Backend) -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head)
            writer.write(answer(b'{"n":%d}' % len(heads)))

    url = await server.start(handler)
    for i in (1, 2, 3):
        response = await backend.post(url, b"{}", {"authorization": "Bearer x"}, T)
        assert (response.status, response.body) == (200, b'{"n":%d}' % i)
    assert server.connections == 1
    assert heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:")
    assert b"authorization: Bearer x\r\n" in heads[0] and b"content-length: 2\r\n" in heads[0]


async def test_connection_close_is_not_reused(server: Server, backend: Http1Backend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"ok", "Connection: close"))
        await writer.drain()
        writer.close()

    url = await server.start(handler)
    for _ in range(2):
        assert (await backend.post(url, b"{}", {}, T)).body == b"ok"
    assert server.connections == 2


class ResettingServer:
    """A loopback server on a thread: answers each connection's first request, then, once
    told, resets the first connection (RST) while it is idle in the client's pool. On its
    own thread, so the reset happens while the client's event loop is not running."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.reset = threading.Event()
        self.was_reset = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/chat/completions"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                conn, _ = self._listener.accept()
                self.connections += 1
                first = self.connections == 1
                threading.Thread(target=self._serve, args=(conn, first), daemon=True).start()

    def _serve(self, conn: socket.socket, first: bool) -> None:
        with conn:
            data = b""
            while not data.endswith(b"{}"):  # the head and the 2-byte body
                data += conn.recv(65536)
            self.requests += 1
            conn.sendall(answer(b"ok"))
            if first and self.reset.wait(5):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # with a zero linger: an RST, not a FIN
                self.was_reset.set()

    def close(self) -> None:
        self.reset.set()
        self._listener.close()


@pytest.fixture
def resetting() -> Iterator[ResettingServer]:
    s = ResettingServer()
    yield s
    s.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pooled_connection_reset_before_the_write_is_resent_on_a_fresh_one(
    resetting: ResettingServer, loop: str
) -> None:
    # The upstream resets the idle connection and the event loop has not run since, so the
    # client cannot know it yet: its write fails at once (the kernel has the RST), nothing of
    # the request left, and it is sent on a new connection. One delivery, no error. Run on
    # both loops: how a failed write shows is the loop's business (uvloop in production).
    async def scenario() -> None:
        backend = Http1Backend()
        try:
            assert (await backend.post(resetting.url, b"{}", {}, T)).body == b"ok"
            resetting.reset.set()
            # Blocks the loop on purpose (bounded): the reset must not be read before the write.
            assert resetting.was_reset.wait(2)
            assert (await backend.post(resetting.url, b"{}", {}, T)).body == b"ok"
        finally:
            await backend.aclose()

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(scenario())
    assert (resetting.requests, resetting.connections) == (2, 2)


async def test_keep_alive_timeout_hint_limits_reuse(server: Server) -> None:
    # A server that announces "Keep-Alive: timeout=N" closes idle connections after N s:
    # a connection is reused for at most N - 1 s (and keepalive_s), never in the last second.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            hint = "Keep-Alive: timeout=1" if b"short" in head else "Keep-Alive: timeout=1.4"
            writer.write(answer(b"ok", hint))

    url = await server.start(handler)
    backend = Http1Backend(keepalive_s=30)
    try:
        await backend.post(url, b"{}", {}, T)
        await backend.post(url, b"{}", {}, T)  # idle a moment: reused
        assert server.connections == 1
        await asyncio.sleep(0.6)  # past 1.4 - 1 s: the server may be about to close it
        await backend.post(url, b"{}", {}, T)
        assert server.connections == 2
        # timeout=1 leaves no safe reuse time: the connection is closed, not pooled.
        await backend.post(url, b"{}", {"x-kind": "short"}, T)
        await backend.post(url, b"{}", {}, T)
        assert server.connections == 3
    finally:
        await backend.aclose()


async def test_abandoned_stream_closes_its_connection(
    server: Server, backend: Http1Backend
) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await reader.read()  # returns at EOF: the client closed the connection
        closed.set()

    url = await server.start(handler)
    async with backend.stream(url, b"{}", {}, T) as stream:
        async for chunk in stream.chunks():
            assert chunk == b"data: 1\n\n"
            break
    await asyncio.wait_for(closed.wait(), 2)


async def test_close_delimited_body_is_read_to_the_end(
    server: Server, backend: Http1Backend
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    url = await server.start(handler)
    assert (await backend.post(url, b"{}", {}, T)).body == b"all of it"


async def test_large_stream_with_a_slow_reader_arrives_intact(
    server: Server, backend: Http1Backend
) -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    blocks = 40

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(block) * blocks))
        for _ in range(blocks):
            writer.write(block)
            await writer.drain()

    url = await server.start(handler)
    received = bytearray()
    async with backend.stream(url, b"{}", {}, T) as stream:
        async for chunk in stream.chunks():
            received += chunk
            await asyncio.sleep(0.001)
    assert bytes(received) == block * blocks


async def test_header_with_line_break_is_refused(server: Server, backend: Http1Backend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    url = await server.start(handler)
    with pytest.raises(TransportError, match="line break"):
        await backend.post(url, b"{}", {"x-evil": "a\r\nhost: elsewhere"}, T)
    assert server.connections == 0


async def test_malformed_response_is_transport_error(server: Server, backend: Http1Backend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    url = await server.start(handler)
    with pytest.raises(TransportError):
        await backend.post(url, b"{}", {}, T)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl is on every Debian machine)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_upstream(server: Server, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(b"secret"))

    url = await server.start(handler, tls=server_tls)
    trusting = Http1Backend(ssl_context=ssl.create_default_context(cafile=str(cert)))
    untrusting = Http1Backend()  # the system's trust store does not know this cert
    try:
        for _ in range(2):
            assert (await trusting.post(url, b"{}", {}, T)).body == b"secret"
        assert server.connections == 1
        with pytest.raises(TransportError):
            await untrusting.post(url, b"{}", {}, T)
    finally:
        await trusting.aclose()
        await untrusting.aclose()


async def test_large_json_answer_is_read_whole(server: Server, backend: Http1Backend) -> None:
    # Over the buffering limit at which reading pauses: post() must keep draining.
    body = b"x" * 600_000

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(body))
            await writer.drain()

    url = await server.start(handler)
    for _ in range(2):  # and the connection is fit for the next request
        assert (await backend.post(url, b"{}", {}, T)).body == body
    assert server.connections == 1
