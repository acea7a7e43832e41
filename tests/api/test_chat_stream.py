"""A streamed answer and its client, at the ASGI boundary: a client that stops reading holds
the upstream back, and a client that goes away closes it and settles the key's budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from structlog.testing import capture_logs

from app.api.server import SIGNALS, RequestSignals
from app.auth.ledger import Periods
from app.providers.base import Completion, Provider, StreamChunk, UpstreamCall
from tests.auth.test_limits_api import KEY, MSG, keyed_client, keyed_config
from tests.conftest import sim_deployment


class Watched:
    """The simulated provider, counting the chunks the gateway pulls and seeing it close."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.pulled = 0
        self.closed = False

    async def complete(self, call: UpstreamCall) -> Completion:
        return await self.inner.complete(call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamChunk]:
        try:
            async for chunk in self.inner.stream(call):
                self.pulled += 1
                yield chunk
        finally:
            self.closed = True

    async def aclose(self) -> None:
        await self.inner.aclose()


class StalledClient:
    """Reads ``reads`` body messages, then stops reading (the server's writes block, as when
    the socket buffer is full) until it goes away."""

    def __init__(self, body: bytes, reads: int) -> None:
        self._body: bytes | None = body
        self._reads = reads
        self.bodies: list[bytes] = []
        self.stalled = asyncio.Event()
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        self.bodies.append(message.get("body", b""))
        if len(self.bodies) >= self._reads:
            self.stalled.set()
            await self.gone.wait()


def scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {KEY}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway", 80),
    }


async def test_a_stalled_client_holds_the_upstream_back_and_leaving_closes_and_settles(
    app_client,
) -> None:
    # 1000 tokens at 1000 tokens/s: the upstream would keep producing for a second.
    slow = sim_deployment(price_in=0.1, price_out=0.2, realtime=True, ttft_s=0.001, decode_tps=1000)
    slow["simulation"]["output_tokens"] = 1000
    config = keyed_config({"small@sim": slow, "small@sim2": slow}, budget={"daily_usd": 1})
    _, clock, app = await keyed_client(app_client, config)
    registry = app.state.gateway.providers._by_kind
    watched = registry["simulated"] = Watched(registry["simulated"])
    body = orjson.dumps({"model": "small", "messages": MSG, "stream": True, "max_tokens": 1000})
    client = StalledClient(body, reads=3)
    with capture_logs() as logs:
        served = asyncio.ensure_future(app(scope(body), client.receive, client.send))
        await asyncio.wait_for(client.stalled.wait(), 5)
        pulled = watched.pulled
        await asyncio.sleep(0.2)  # 200 tokens' worth of upstream time
        assert watched.pulled == pulled <= 5  # not read ahead while the client is stalled
        assert not watched.closed
        client.gone.set()
        await asyncio.wait_for(served, 5)
    assert watched.closed  # the upstream stream was closed when the client left
    (record,) = [e for e in logs if e.get("event") == "request"]
    assert record["status"] == 499 and record["client_disconnected"] is True
    assert record["usage_counted_by_gateway"] is True and record["output_tokens"] >= 1
    day, _ = await app.state.guard.ledger.spend("team", Periods.at(clock.now))
    assert day.held == 0 and day.spent > 0  # the hold released, what was relayed charged


class HookedClient:
    """A client under ``pareto serve``: the server's disconnect hook is in the scope, so the
    app must not need another ``receive()`` after the body to notice the client leaving."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self.receives = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a server that never reports: only the hook does
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_the_servers_request_signals_cancels_a_request_without_a_pending_receive(
    app_client,
) -> None:
    slow = sim_deployment(price_in=0.1, price_out=0.2, realtime=True, ttft_s=5, decode_tps=1000)
    config = keyed_config({"small@sim": slow, "small@sim2": slow}, budget={"daily_usd": 1})
    _, clock, app = await keyed_client(app_client, config)
    body = orjson.dumps({"model": "small", "messages": MSG, "max_tokens": 8})
    client = HookedClient(body)
    hook = RequestSignals()
    asgi_scope = {**scope(body), "extensions": {SIGNALS: {"signals": hook}}}
    with capture_logs() as logs:
        served = asyncio.ensure_future(app(asgi_scope, client.receive, client.send))
        for _ in range(200):  # until the request waits on its upstream (5 s to first token)
            await asyncio.sleep(0.005)
            if hook.callback is not None:
                break
        assert hook.callback is not None
        assert client.receives == 1  # the body only: nothing kept pending for a disconnect
        hook.fire()  # what the protocol does when the connection is lost
        await asyncio.wait_for(served, 2)
    assert client.sent == []  # nobody to answer
    (record,) = [e for e in logs if e.get("event") == "request"]
    assert record["status"] == 499 and record["client_disconnected"] is True
    day, _ = await app.state.guard.ledger.spend("team", Periods.at(clock.now))
    assert day.held == 0  # the hold released


async def test_a_finished_streams_done_event_goes_out_with_the_end_of_the_response(
    app_client,
) -> None:
    # One write for the last event and the chunked terminator, not two (uvicorn writes each
    # http.response.body message as it comes).
    config = keyed_config(budget={"daily_usd": 1})
    _, _, app = await keyed_client(app_client, config)
    body = orjson.dumps({"model": "small", "messages": MSG, "stream": True, "max_tokens": 8})
    client = HookedClient(body)
    with capture_logs() as logs:
        await asyncio.wait_for(app(scope(body), client.receive, client.send), 5)
    bodies = [m for m in client.sent if m["type"] == "http.response.body"]
    assert bodies[-1] == {"type": "http.response.body", "body": b"data: [DONE]\n\n"}
    assert all(m.get("more_body") for m in bodies[:-1])
    assert all(m["body"] for m in bodies)  # no empty message just to end the response
    (record,) = [e for e in logs if e.get("event") == "request"]
    assert record["status"] == 200 and record["client_disconnected"] is False


async def test_a_client_leaving_while_the_budget_is_settled_does_not_cut_the_settle(
    app_client,
) -> None:
    # The stream is over (upstream done, record written) and its cost is being settled when
    # the connection drops: the request's task is cancelled, but the settle must still reach
    # the ledger, or the hold stays (budget reserved until it expires) and the cost is lost.
    config = keyed_config(budget={"daily_usd": 1})
    _, clock, app = await keyed_client(app_client, config)
    ledger = app.state.guard.ledger
    settle = ledger.settle
    settling = asyncio.Event()

    async def slow_settle(*args: Any, **kwargs: Any) -> Any:
        settling.set()
        await asyncio.sleep(0.05)  # a Redis round trip
        return await settle(*args, **kwargs)

    ledger.settle = slow_settle
    body = orjson.dumps({"model": "small", "messages": MSG, "stream": True, "max_tokens": 8})
    client = HookedClient(body)
    hook = RequestSignals()
    asgi_scope = {**scope(body), "extensions": {SIGNALS: {"signals": hook}}}
    served = asyncio.ensure_future(app(asgi_scope, client.receive, client.send))
    await asyncio.wait_for(settling.wait(), 5)
    hook.fire()  # the connection is lost now
    await asyncio.wait_for(served, 5)
    await asyncio.sleep(0.1)
    day, _ = await app.state.guard.ledger.spend("team", Periods.at(clock.now))
    assert day.held == 0 and day.spent > 0  # the hold released and the cost charged


async def test_a_finished_streams_end_does_not_wait_for_the_budget_settle(app_client) -> None:
    # The client has its whole answer, [DONE] and the response's end, before the cost is
    # settled (a Redis round trip, up to PARETO_REDIS_TIMEOUT_S when Redis is slow), as a
    # non-streaming answer does; the settle still happens.
    config = keyed_config(budget={"daily_usd": 1})
    _, clock, app = await keyed_client(app_client, config)
    ledger = app.state.guard.ledger
    settle = ledger.settle
    order: list[str] = []

    async def slow_settle(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        order.append("settled")
        return await settle(*args, **kwargs)

    ledger.settle = slow_settle

    class Client(HookedClient):
        async def send(self, message: dict[str, Any]) -> None:
            await super().send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                order.append("ended")

    body = orjson.dumps({"model": "small", "messages": MSG, "stream": True, "max_tokens": 8})
    client = Client(body)
    await asyncio.wait_for(app(scope(body), client.receive, client.send), 5)
    assert order == ["ended", "settled"]
    assert client.sent[-1] == {"type": "http.response.body", "body": b"data: [DONE]\n\n"}
    day, _ = await app.state.guard.ledger.spend("team", Periods.at(clock.now))
    assert day.held == 0 and day.spent > 0
