"""A request the upstream may have processed is never sent to it a second time.

A real upstream on loopback, the production HTTP client (http1) and the whole gateway. The
upstream reads the request and closes the connection without answering: it may be running,
and billing, the generation. Neither the HTTP client (it used to resend on a fresh
connection when the connection was a pooled one) nor the walk (it used to retry a
connection_error on the same deployment) may deliver it again: the request fails over to
another deployment of the plan, or ends with an OpenAI-shaped 503; either way the record
says connection_error and the upstream saw the request once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from tests.conftest import small_config
from tests.support.prom import parse, value

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 0,
        "model": "local",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)


class Upstream:
    """An OpenAI-compatible upstream that answers every request with a completion, except
    one whose last message says ``drop``: it reads that one whole, then closes without a
    byte of answer. Counts what it received, by last message."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = orjson.loads(await reader.readexactly(length))
                text = body["messages"][-1]["content"]
                self.received.append(text)
                if "drop" in text:
                    writer.close()
                    return
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n" % len(COMPLETION) + COMPLETION
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def stop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    u = Upstream()
    yield u
    await u.stop()


def local_deployment(url: str) -> dict[str, Any]:
    return {
        "kind": "openai_compat",
        "base_url": url,
        "price": {"input": 0.01, "output": 0.01},  # the cheapest: the plan's primary
        "ttft_s": 0.1,
        "decode_tps": 100,
    }


def ask(model: str, text: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("pooled", [False, True], ids=["new-connection", "pooled-connection"])
@pytest.mark.parametrize("model", ["solo", "small"], ids=["only-deployment", "with-fallback"])
async def test_request_dropped_after_delivery_is_not_sent_again(
    app_client, upstream: Upstream, model: str, pooled: bool, stream: bool
) -> None:
    url = await upstream.start()
    config = small_config(
        **{"solo@local": local_deployment(url), "small@local": local_deployment(url)}
    )
    config["models"]["solo"] = {"quality": 30, "context_window": 32000}
    # max_retries=2: the walk could retry the same deployment twice if it wanted to.
    client = await app_client(config, http_client="http1", max_retries=2)
    if pooled:  # a first request leaves a keep-alive connection in the client's pool
        r = await client.post("/v1/chat/completions", json=ask(model, "hello", False))
        assert r.status_code == 200 and r.headers["x-pareto-deployment"] == f"{model}@local"
    before = parse((await client.get("/metrics")).text)
    with capture_logs() as logs:
        r = await client.post("/v1/chat/completions", json=ask(model, "drop this", stream))
    await asyncio.sleep(0.1)  # time for a second copy to arrive, if one were sent
    after = parse((await client.get("/metrics")).text)

    assert upstream.received.count("drop this") == 1
    (record,) = [e for e in logs if e.get("event") == "request"]
    assert record["fallback_reason"] == r.headers["x-pareto-fallback-reason"] == "connection_error"
    assert record["attempt_log"][0] == {
        "deployment": f"{model}@local",
        "fallback_reason": "connection_error",
    }
    if model == "small":  # failed over to the simulated deployment, which answered
        assert r.status_code == 200, r.text
        assert r.headers["x-pareto-deployment"] == record["deployment"] == "small@sim"
        assert record["attempts"] == 2
    else:  # nothing else to try: an OpenAI-shaped 503 naming what failed
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "all_deployments_failed" == record["user_visible_error"]
        assert "solo@local: connection_error" in error["message"]
        assert record["attempts"] == 1 and record["status"] == 503
    assert (
        value(after, "pareto_fallbacks_total", reason="connection_error")
        - value(before, "pareto_fallbacks_total", reason="connection_error")
        == 1
    )
    failures = "pareto_upstream_failures_total"
    dep = f"{model}@local"
    assert (
        value(after, failures, deployment=dep, reason="connection_error")
        - value(before, failures, deployment=dep, reason="connection_error")
        == 1
    )


async def test_connection_refused_is_still_retried_on_the_same_deployment(app_client) -> None:
    # Nothing was delivered, so trying the same deployment again is safe: the walk does.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    config = small_config(**{"solo@local": local_deployment(f"http://127.0.0.1:{port}/v1")})
    config["models"]["solo"] = {"quality": 30, "context_window": 32000}
    client = await app_client(config, http_client="http1", max_retries=1, retry_backoff_s=0)
    r = await client.post("/v1/chat/completions", json=ask("solo", "hi", False))
    assert r.status_code == 503
    assert r.headers["x-pareto-attempts"] == "2"
    assert "solo@local: connection_error x2" in r.json()["error"]["message"]
