"""Input hardening at the server edge: header size, slow clients, and no client-chosen upstream."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import yaml

from app.auth.config import generate_key, hash_key
from tests.conftest import small_config
from tests.support.procs import Proc, gateway


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("edge")
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(small_config()))
    env = {
        "PARETO_MAX_HEADER_BYTES": "8192",
        "PARETO_HEADER_TIMEOUT_S": "0.5",
        "PARETO_BODY_TIMEOUT_S": "0.5",
    }
    with gateway(path, tmp, env=env) as gw:
        yield gw


def connect(gw: Proc) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def raw(gw: Proc, payload: bytes, *, wait_s: float = 10.0) -> bytes:
    """Send raw bytes, then read until the server closes or has sent an error body."""
    with connect(gw) as sock:
        if payload:
            sock.sendall(payload)
        data = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if data.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in data:
                break
        return data


def error_of(response: bytes) -> dict[str, Any]:
    body = response.split(b"\r\n\r\n", 1)[1]
    err: dict[str, Any] = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.mark.e2e
def test_oversized_headers_get_431_before_the_app_runs(edge) -> None:
    big = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n"
    response = raw(edge, big)
    assert response.startswith(b"HTTP/1.1 431 ")
    assert "PARETO_MAX_HEADER_BYTES" in error_of(response)["message"]
    # Headers that fit are served as usual.
    ok = raw(edge, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-fine: " + b"b" * 4000 + b"\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")


@pytest.mark.e2e
def test_headers_sent_in_many_small_pieces_add_up(edge) -> None:
    with connect(edge) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        for i in range(40):  # 40 x 400 bytes, each piece well inside the header deadline
            try:
                sock.sendall(b"x-h%d: %s\r\n" % (i, b"c" * 390))
            except OSError:
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")


@pytest.mark.e2e
def test_slow_headers_get_408_and_the_connection_closed(edge) -> None:
    response = raw(edge, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # never finished
    assert response.startswith(b"HTTP/1.1 408 ")
    assert "headers did not arrive within 0.5 s" in error_of(response)["message"]


@pytest.mark.e2e
def test_a_silent_connection_is_closed(edge) -> None:
    assert raw(edge, b"").startswith(b"HTTP/1.1 408 ")


@pytest.mark.e2e
def test_slow_body_gets_408_from_the_app(edge) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n"
    )
    response = raw(edge, head + b'{"model":')  # 9 of the 100 promised bytes
    assert response.startswith(b"HTTP/1.1 408 ")
    err = error_of(response)
    assert err["code"] == "request_timeout" and "PARETO_BODY_TIMEOUT_S" in err["message"]


@pytest.mark.e2e
def test_keep_alive_requests_are_not_cut_by_the_header_deadline(edge) -> None:
    with connect(edge) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            data = b""
            while b'{"status":"ok"}' not in data:
                chunk = sock.recv(65536)
                assert chunk, "the server closed a kept-alive connection"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.3)  # idle between requests is the keep-alive timer's business


# -- no user-controlled upstream ---------------------------------------------------------


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP server that records every request and answers like OpenAI."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                body = orjson.loads(self.rfile.read(length) or b"{}")
                recorder.seen.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                out = orjson.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "?"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "hi"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                    }
                )
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST  # noqa: N815

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    servers = (Recorder(), Recorder())
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


async def test_no_body_or_header_field_can_change_the_upstream(
    app_client, recorders, monkeypatch
) -> None:
    upstream, trap = recorders
    monkeypatch.setenv("UPSTREAM_KEY", "prov-" + "u" * 30)
    client_key = generate_key()
    config = small_config()
    config["deployments"] = {
        "small@http": {
            "kind": "openai_compat",
            "base_url": upstream.url + "/v1",
            "api_key_env": "UPSTREAM_KEY",
            "upstream_model": "real-small",
            "price": {"input": 1, "output": 1},
            "ttft_s": 0.1,
            "decode_tps": 100,
        }
    }
    config["auth"] = {"keys": {"client": {"hash": hash_key(client_key)}}}
    client = await app_client(config)
    evil = trap.url + "/v1"
    body = {
        "model": "small",
        "messages": [{"role": "user", "content": "hi"}],
        "base_url": evil,
        "api_base": evil,
        "url": evil,
        "endpoint": evil,
    }
    headers = {
        "authorization": f"Bearer {client_key}",
        "x-pareto-base-url": evil,
        "x-pareto-deployment": "small@" + evil,
        "x-upstream-url": evil,
        "x-forwarded-host": trap.url.removeprefix("http://"),
        "forwarded": f"host={trap.url.removeprefix('http://')}",
    }
    r = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    # The gateway's own extension object is typed strictly: no field names a URL.
    r = await client.post(
        "/v1/chat/completions",
        json={**body, "pareto": {"base_url": evil}},
        headers={"authorization": f"Bearer {client_key}"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "pareto.base_url"
    for model in (evil, "small@" + evil, f"{evil}/chat/completions"):
        r = await client.post(
            "/v1/chat/completions",
            json={**body, "model": model},
            headers={"authorization": f"Bearer {client_key}"},
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert trap.seen == []
    assert len(upstream.seen) == 1
    seen = upstream.seen[0]
    assert seen["path"] == "/v1/chat/completions" and seen["body"]["model"] == "real-small"
    # The upstream gets the gateway's provider key, never the client's gateway key.
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert sent["authorization"] == "Bearer prov-" + "u" * 30
    assert client_key not in orjson.dumps(seen).decode()
    assert "x-pareto-base-url" not in sent and "forwarded" not in sent


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_response_head_goes_out_with_the_first_body_bytes() -> None:
    from app.api.server import _HeadWithBody

    real = _Recorder()
    transport = _HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert real.writes == []  # held
    transport.write(b"")  # uvicorn writes an empty body too
    transport.write(b"more")
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"more"]
    assert transport.is_closing() is False  # everything else reaches the real transport

    cut = _HeadWithBody(_Recorder())  # type: ignore[arg-type]
    cut.write(b"HTTP/1.1 200 OK\r\n\r\n")
    cut.close()  # the app failed before any body: the head is not lost
    assert cut._transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n"] and cut._transport.closed  # type: ignore[attr-defined]


def test_head_and_100_continue_get_their_answers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The head-with-body write must not hold back a HEAD answer (no body is ever written)
    # nor the interim "100 Continue" a client waits for before sending its body.
    import socket

    import yaml

    from tests.conftest import small_config
    from tests.support.procs import gateway

    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(small_config()))
    with gateway(path, tmp_path) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 ")
        body = b'{"model":"small","messages":[{"role":"user","content":"hi"}]}'
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            assert s.recv(4096).startswith(b"HTTP/1.1 100 ")
            s.sendall(body)
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")


class _Transport(_Recorder):
    """Enough of an asyncio transport for uvicorn's protocol."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


async def test_the_server_tells_the_app_when_the_whole_body_is_in() -> None:
    # A body that arrived with its headers is read without a timer (no wait is possible);
    # one still on its way is read under PARETO_BODY_TIMEOUT_S.
    import asyncio

    seen: list[bool] = []
    body = b'{"model":"small"}'
    head = b"POST /v1/x HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)

    async def serve(*pieces: bytes) -> None:
        protocol, transport = _protocol(30.0, seen)
        for piece in pieces:
            protocol.data_received(piece)
            await asyncio.sleep(0.01)
        assert any(w.startswith(b"HTTP/1.1 204") for w in transport.writes)
        protocol.connection_lost(None)

    await serve(head + body)  # one read: headers and body together
    await serve(head, body)  # the app starts before the body is in
    assert seen == [True, False]


def _protocol(
    header_timeout_s: float, body_received: list[bool] | None = None
) -> tuple[Any, _Transport]:
    """The hardened protocol on a recording transport, serving an app that reads the body
    and answers 204 (noting, into ``body_received``, whether the body was in at its start)."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from app.api.server import HardenedHttpToolsProtocol, request_signals

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if body_received is not None:
            signals = request_signals(scope)
            assert signals is not None
            body_received.append(signals.body_received)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(app=app, lifespan="off", log_level="warning")
    config.load()
    config._pareto_server_limits = (8192, header_timeout_s)  # type: ignore[attr-defined]
    protocol = HardenedHttpToolsProtocol(config, ServerState(), {})
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


class _CountingLoop:
    """The running loop, counting the header-deadline timers armed through it (uvicorn's own
    keep-alive timer is not ours)."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self.timers = 0

    def call_later(self, *args: Any) -> Any:
        self.timers += getattr(args[1], "__name__", "") == "_too_slow"
        return self._loop.call_later(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


async def test_back_to_back_requests_do_not_each_arm_a_header_timer() -> None:
    import asyncio

    protocol, transport = _protocol(30.0)
    loop = protocol.loop = _CountingLoop(protocol.loop)
    for _ in range(5):  # keep-alive: each request's headers start the deadline anew
        protocol.data_received(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.sleep(0.01)
    assert sum(w.startswith(b"HTTP/1.1 204") for w in transport.writes) == 5
    assert loop.timers == 0  # the connection's one timer (armed on connect) still stands
    protocol.connection_lost(None)


async def test_headers_that_start_late_on_a_kept_alive_connection_get_their_own_deadline() -> None:
    import asyncio

    protocol, transport = _protocol(1.0)
    started = asyncio.get_running_loop().time()
    protocol.data_received(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")  # answered at once
    await asyncio.sleep(0.5)
    protocol.data_received(b"GET /x HTTP/1.1\r\nhost: x\r\n")  # headers never finished
    await asyncio.sleep(0.7)  # the connection's timer fired at 1.0: 0.5 s left for these
    assert not any(b" 408 " in w for w in transport.writes)
    while not any(b" 408 " in w for w in transport.writes):
        assert asyncio.get_running_loop().time() - started < 5
        await asyncio.sleep(0.05)
    assert asyncio.get_running_loop().time() - started >= 1.5


async def test_a_connections_first_headers_are_due_from_the_connection_opening() -> None:
    # A client that waits before its first byte does not get a fresh deadline from that
    # byte: the first request's headers are due PARETO_HEADER_TIMEOUT_S after the connect.
    import asyncio

    loop = asyncio.get_running_loop()
    protocol, transport = _protocol(0.6)
    opened = loop.time()
    await asyncio.sleep(0.4)
    protocol.data_received(b"GET /x HTTP/1.1\r\nho")  # headers never finished
    while not any(b" 408 " in w for w in transport.writes):
        assert loop.time() - opened < 0.9, "408 not sent within the deadline from connect"
        await asyncio.sleep(0.02)
    protocol.connection_lost(None)


@pytest.mark.parametrize(
    ("pipelined", "status", "says"),
    [
        (b"GET /b HTTP/1.1\r\nho", b" 408 ", b"headers did not arrive"),  # never finished
        (
            b"GET /b HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 9000 + b"\r\n\r\n",
            b" 431 ",
            b"PARETO_MAX_HEADER_BYTES",
        ),
    ],
    ids=["slow", "too-large"],
)
async def test_a_pipelined_requests_rejection_does_not_cut_the_response_in_flight(
    pipelined: bytes, status: bytes, says: bytes
) -> None:
    # A pipelining client sent request A and then request B, which is refused (its headers
    # too slow or too large) while A's answer is still being written: B's error must come
    # after A's complete answer, not in the middle of it (nor end the writing side under it).
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from app.api.server import HardenedHttpToolsProtocol

    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(6):  # 0.6 s of answer, past the 0.3 s header deadline
                await send({"type": "http.response.body", "body": b"part;", "more_body": True})
                await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b"end"})
        except BaseException as exc:
            errors.append(exc)
            raise

    class Transport(_Transport):  # like asyncio's: no writes after write_eof()
        eof = False

        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            self.eof = True

        def write(self, data: bytes) -> None:
            if self.eof:
                raise RuntimeError("Cannot call write() after write_eof()")
            super().write(data)

    config = Config(app=app, lifespan="off", log_level="critical")
    config.load()
    config._pareto_server_limits = (8192, 0.3)  # type: ignore[attr-defined]
    protocol = HardenedHttpToolsProtocol(config, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n" + pipelined)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not any(status in w for w in transport.writes):
        assert loop.time() - started < 5
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    out = b"".join(transport.writes)
    assert errors == []
    answer, _, rest = out.partition(status)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"part;") == 6
    assert b"end\r\n0\r\n\r\n" in answer  # A's answer complete before B's error
    assert says in rest
    protocol.connection_lost(None)


async def test_a_lost_connection_reaches_the_request_being_answered_with_one_pipelined_behind() -> (
    None
):
    # Request A is being answered and B waits behind it (pipelined): when the connection is
    # lost, A's app must hear it (its upstream call is then cancelled), not only B's.
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from app.api.server import HardenedHttpToolsProtocol, request_signals

    heard: list[str] = []
    waiting = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        signals = request_signals(scope)
        assert signals is not None
        gone = asyncio.Event()
        signals.callback = gone.set
        waiting.set()
        await gone.wait()  # as the chat endpoint waits on its upstream
        heard.append(scope["path"])

    config = Config(app=app, lifespan="off", log_level="critical")
    config.load()
    config._pareto_server_limits = (8192, 30.0)  # type: ignore[attr-defined]
    protocol = HardenedHttpToolsProtocol(config, ServerState(), {})
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.data_received(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(waiting.wait(), 2)
    protocol.connection_lost(None)
    for _ in range(50):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == ["/a"]


async def test_pipelined_headers_that_grow_past_the_limit_during_an_answer_get_431_after_it() -> (
    None
):
    # Request B's headers keep coming, piece by piece, while A is answered: they are counted
    # (not held in memory without bound until A ends) and B gets its 431 after A's answer.
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from app.api.server import HardenedHttpToolsProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"part;", "more_body": True})
            await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"end"})

    config = Config(app=app, lifespan="off", log_level="critical")
    config.load()
    config._pareto_server_limits = (8192, 30.0)  # type: ignore[attr-defined]
    protocol = HardenedHttpToolsProtocol(config, ServerState(), {})

    class Transport(_Transport):
        def can_write_eof(self) -> bool:
            return False

    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\n")
    for i in range(30):  # 30 x 400 bytes of B's headers while A is answered
        await asyncio.sleep(0.005)
        protocol.data_received(b"x-h%d: %s\r\n" % (i, b"c" * 390))
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not any(b" 431 " in w for w in transport.writes):
        assert loop.time() - started < 3, "no 431 for headers past the limit"
        await asyncio.sleep(0.05)
    answer, _, rest = b"".join(transport.writes).partition(b" 431 ")
    assert b"end\r\n0\r\n\r\n" in answer and b"PARETO_MAX_HEADER_BYTES" in rest
    protocol.connection_lost(None)
