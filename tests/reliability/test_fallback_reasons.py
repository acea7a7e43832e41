"""Each fallback_reason is produced by the failure it names and shows in the headers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import sim_deployment, small_config
from tests.support.procs import free_port


def config() -> dict[str, Any]:
    """small@sim (cheapest, primary) → small@sim3 (same window) → small@sim2 (larger window)."""
    return small_config(
        **{
            "small@sim3": sim_deployment(price_in=0.15, price_out=0.3),
            "small@sim2": {**sim_deployment(price_in=0.2, price_out=0.4), "context_window": 64000},
        }
    )


def ask(text: str, stream: bool = False, model: str = "small") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


def sse(text: str) -> list[str]:
    return [e.removeprefix("data: ") for e in text.strip().split("\n\n")]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("directive", "reason"),
    [
        ("[sim:error=500@small@sim]", "upstream_5xx"),
        ("[sim:error=503@small@sim]", "upstream_5xx"),
        ("[sim:error=429@small@sim]", "rate_limited"),
        ("[sim:hang@small@sim]", "timeout_first_token"),
        ("[sim:error=401@small@sim]", "auth_failed"),
        ("[sim:error=403@small@sim]", "auth_failed"),
        ("[sim:invalid_response@small@sim]", "invalid_response"),
    ],
)
async def test_reason_in_headers_and_fallback_answers(
    app_client, directive: str, reason: str, stream: bool
) -> None:
    client = await app_client(config(), first_token_timeout_s=0.2)
    r = await client.post("/v1/chat/completions", json=ask(f"hi {directive}", stream))
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-fallback-reason"] == reason
    assert r.headers["x-pareto-attempts"] == "2"
    assert r.headers["x-pareto-deployment"] == "small@sim3"
    if stream:
        assert sse(r.text)[-1] == "[DONE]"
    else:
        assert r.json()["choices"][0]["message"]["content"]


async def test_connection_error_before_first_token_fails_over(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("[sim:cut=0@small@sim]", True))
    assert r.headers["x-pareto-fallback-reason"] == "connection_error"
    assert r.headers["x-pareto-deployment"] == "small@sim3"
    assert sse(r.text)[-1] == "[DONE]"


@pytest.mark.parametrize("stream", [False, True])
async def test_total_timeout(app_client, stream: bool) -> None:
    # The attempt's total budget (0.2s) is tighter than its first-token budget (5s).
    client = await app_client(config(), first_token_timeout_s=5, total_timeout_s=0.2)
    r = await client.post("/v1/chat/completions", json=ask("[sim:hang@small@sim]", stream))
    assert r.status_code == 200
    assert r.headers["x-pareto-fallback-reason"] == "timeout_total"
    assert r.headers["x-pareto-deployment"] == "small@sim3"


async def test_context_window_skips_to_a_larger_window(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("long [sim:context_window@small@sim]"))
    assert r.status_code == 200
    assert r.headers["x-pareto-fallback-reason"] == "context_window"
    # small@sim3 has the same 32k window as small@sim: skipped without a call.
    assert r.headers["x-pareto-deployment"] == "small@sim2"
    assert r.headers["x-pareto-attempts"] == "2"


async def test_context_window_everywhere_is_the_clients_400(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("long [sim:context_window]"))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert "shorten the messages" in err["message"]
    assert r.headers["x-pareto-fallback-reason"] == "context_window"


async def test_client_fault_400_is_returned_as_is_and_never_retried(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("bad [sim:error=400@small@sim]"))
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "simulated failure with status 400"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["x-pareto-attempts"] == "1"  # small@sim3 and small@sim2 never asked


async def test_auth_failure_opens_the_breaker_then_circuit_open(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("[sim:error=401@small@sim]"))
    assert r.headers["x-pareto-fallback-reason"] == "auth_failed"
    # The key will not heal by itself: the next request skips small@sim without calling it
    # (the router leaves the open breaker's deployment out of the plan: excluded:unhealthy).
    r = await client.post("/v1/chat/completions", json=ask("hello again"))
    assert r.status_code == 200
    assert "x-pareto-fallback-reason" not in r.headers
    assert r.headers["x-pareto-attempts"] == "1"
    assert r.headers["x-pareto-deployment"] == "small@sim3"
    r = await client.post("/v1/route", json=ask("hello again"))
    statuses = {row["deployment"]: row["status"] for row in r.json()["candidates"]}
    assert statuses["small@sim"] == "excluded:unhealthy"
    ready = (await client.get("/readyz")).json()
    assert ready["checks"]["breakers"] == "local; open: small@sim"
    metrics = (await client.get("/metrics")).text
    assert 'pareto_breaker_opens_total{cause="auth_failed",deployment="small@sim"} 1.0' in metrics
    assert 'pareto_breaker_state{deployment="small@sim"} 2.0' in metrics


async def test_every_deployment_failing_is_a_fast_503_listing_what_was_tried(app_client) -> None:
    client = await app_client(config(), retry_backoff_s=0.001)
    r = await client.post("/v1/chat/completions", json=ask("[sim:error=502]"))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    message = r.json()["error"]["message"]
    for dep in ("small@sim", "small@sim3", "small@sim2"):
        assert f"{dep}: upstream_5xx x2" in message  # one retry each (PARETO_MAX_RETRIES=1)
    assert r.headers["x-pareto-attempts"] == "6"


async def test_every_deployment_rate_limited_is_429_with_retry_after(app_client) -> None:
    client = await app_client(config(), retry_backoff_s=0.001, request_timeout_s=2)
    r = await client.post("/v1/chat/completions", json=ask("[sim:error=429][sim:retry_after=30]"))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "30"
    assert r.json()["error"]["code"] == "all_deployments_rate_limited"
    # Retry-After (30s) does not fit the 2s deadline: each deployment was tried once.
    assert r.headers["x-pareto-attempts"] == "3"


async def test_stream_failover_before_first_byte_then_full_answer(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("[sim:error=500@small@sim]", True))
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    assert all(orjson.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])


async def test_mid_stream_cut_ends_with_error_event_not_done(app_client) -> None:
    client = await app_client(config())
    r = await client.post("/v1/chat/completions", json=ask("[sim:cut=2]", True))
    assert r.status_code == 200
    events = sse(r.text)
    assert "[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted"
    contents = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert len([c for c in contents if c]) == 2


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang in SYN-sent (connect timeout)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    yield port
    for s in fillers:
        s.close()
    server.close()


def http_deployment(url: str) -> dict[str, Any]:
    return {
        "kind": "openai_compat",
        "base_url": url,
        "price": {"input": 0.01, "output": 0.01},
        "ttft_s": 0.1,
        "decode_tps": 100,
        "connect_timeout_s": 0.2,
    }


async def test_connect_timeout(app_client, unresponsive_port: int) -> None:
    cfg = config()
    cfg["deployments"]["small@dead"] = http_deployment(f"http://127.0.0.1:{unresponsive_port}/v1")
    client = await app_client(cfg)
    r = await client.post("/v1/chat/completions", json=ask("hi"))
    assert r.status_code == 200
    assert r.headers["x-pareto-fallback-reason"] == "timeout_connect"
    assert r.headers["x-pareto-deployment"] == "small@sim"


async def test_connection_refused(app_client) -> None:
    cfg = config()
    cfg["deployments"]["small@dead"] = http_deployment(f"http://127.0.0.1:{free_port()}/v1")
    client = await app_client(cfg)
    r = await client.post("/v1/chat/completions", json=ask("hi", stream=True))
    assert r.headers["x-pareto-fallback-reason"] == "connection_error"
    assert r.headers["x-pareto-deployment"] == "small@sim"


async def test_total_timeout_after_first_byte_ends_the_stream_with_an_error_event(
    app_client,
) -> None:
    # 5 tokens/s for 100 tokens: the first token comes at once, the answer would take 20s.
    slow = sim_deployment(price_in=0.01, price_out=0.01, decode_tps=5, realtime=True)
    slow["simulation"]["output_tokens"] = 100
    cfg = config()
    cfg["models"]["slowm"] = {"quality": 30, "context_window": 32000}
    cfg["deployments"]["slowm@sim"] = slow
    client = await app_client(cfg, total_timeout_s=0.3)
    r = await client.post("/v1/chat/completions", json=ask("go", True, model="slowm"))
    assert r.status_code == 200 and r.headers["x-pareto-deployment"] == "slowm@sim"
    events = sse(r.text)
    assert "[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted" and "timeout_total" in error["message"]
    assert len(events) >= 2  # the client got the start of the answer first
