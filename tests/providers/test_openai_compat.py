"""The OpenAI-compatible adapter against recorded wire examples (respx)."""

from __future__ import annotations

import httpx
import orjson
import pytest
import respx

from app.catalog import load_catalog
from app.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamContextWindowError,
    UpstreamRateLimitedError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from app.providers.base import UpstreamCall
from app.providers.openai_compat import OpenAICompatProvider
from tests.conftest import small_config

BASE = "https://upstream.test/v1"
KEY = "test-key-abcdefghijklmnop"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m-up",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there"},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}


@pytest.fixture
def deployment(write_config):
    config = small_config(
        **{
            "big@remote": {
                "kind": "openai_compat",
                "base_url": BASE,
                "api_key_env": "REMOTE_KEY",
                "upstream_model": "m-up",
                "headers": {"x-extra": "1"},
                "price": {"input": 1, "output": 2},
                "ttft_s": 0.5,
                "decode_tps": 100,
            }
        }
    )
    return load_catalog(write_config(config), env={"REMOTE_KEY": KEY}).by_id["big@remote"]


def call(dep, **body) -> UpstreamCall:
    payload = {"model": "big", "messages": [{"role": "user", "content": "hi"}], **body}
    return UpstreamCall(dep, payload, "rid-1", 1.0, 2.0, 5.0)


async def test_forwards_body_with_upstream_model_key_and_headers(deployment) -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as client:
        route = mock.post(f"{BASE}/chat/completions").respond(200, json=COMPLETION)
        provider = OpenAICompatProvider(client)
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        result = await provider.complete(call(deployment, tools=tools, seed=3, temperature=0))
        sent = route.calls.last.request
        body = orjson.loads(sent.content)
        assert body["model"] == "m-up" and body["tools"] == tools and body["seed"] == 3
        assert body["stream"] is False
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert sent.headers["x-extra"] == "1"
        assert result.usage.prompt_tokens == 9 and result.usage.cached_tokens == 4


@pytest.mark.parametrize(
    ("status", "payload", "headers", "error", "reason"),
    [
        (
            401,
            {"error": {"message": "Incorrect API key provided: test-key-***"}},
            {},
            UpstreamAuthError,
            "auth_failed",
        ),
        (403, {"error": {"message": "forbidden"}}, {}, UpstreamAuthError, "auth_failed"),
        (
            429,
            {"error": {"message": "Rate limit reached"}},
            {"retry-after": "7"},
            UpstreamRateLimitedError,
            "rate_limited",
        ),
        (500, {"error": {"message": "boom"}}, {}, UpstreamServerError, "upstream_5xx"),
        (503, {"error": {"message": "overloaded"}}, {}, UpstreamServerError, "upstream_5xx"),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                }
            },
            {},
            UpstreamContextWindowError,
            "context_window",
        ),
        (
            400,
            {"error": {"message": "'temperature' must be <= 2"}},
            {},
            UpstreamBadRequestError,
            "upstream_5xx",
        ),
    ],
)
async def test_errors_are_classified_once_at_the_edge(
    deployment, status, payload, headers, error, reason
) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(f"{BASE}/chat/completions").respond(status, json=payload, headers=headers)
        with pytest.raises(error) as info:
            await OpenAICompatProvider(client).complete(call(deployment))
    exc = info.value
    assert KEY not in exc.message
    if error is not UpstreamBadRequestError:
        assert exc.fallback_reason == reason
    if status == 429:
        assert exc.retry_after == 7.0
    if status in (401, 403):
        assert "big@remote" in exc.message and exc.status == 502


async def test_transport_errors_map_to_reasons(deployment) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(f"{BASE}/chat/completions")
        route.side_effect = httpx.ConnectTimeout("slow")
        with pytest.raises(UpstreamTimeoutError) as info:
            await OpenAICompatProvider(client).complete(call(deployment))
        assert info.value.fallback_reason == "timeout_connect"
        route.side_effect = httpx.ConnectError("refused")
        with pytest.raises(UpstreamConnectionError):
            await OpenAICompatProvider(client).complete(call(deployment))
        route.side_effect = httpx.ReadTimeout("slow")
        with pytest.raises(UpstreamTimeoutError) as info:
            [c async for c in OpenAICompatProvider(client).stream(call(deployment))]
        assert info.value.fallback_reason == "timeout_first_token"


def sse(*events: dict | str) -> bytes:
    out = b""
    for e in events:
        out += b"data: " + (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n\n"
    return out


def chunk(delta: dict, finish=None, usage=None) -> dict:
    c = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m-up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        c["choices"] = []
        c["usage"] = usage
    return c


async def test_stream_passes_bytes_through_and_reads_usage(deployment) -> None:
    stream = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, finish="stop"),
        chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
        "[DONE]",
    )
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(f"{BASE}/chat/completions").respond(
            200, content=stream, headers={"content-type": "text/event-stream"}
        )
        chunks = [c async for c in OpenAICompatProvider(client).stream(call(deployment))]
        sent = orjson.loads(route.calls.last.request.content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    # One network read: its events go out as one chunk of the upstream's own bytes; the
    # usage event (no choices) is a chunk of its own so the relay can hide it; [DONE] is
    # the gateway's to write.
    assert [c.content for c in chunks] == [True, False]
    assert chunks[0].data == sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, finish="stop"),
    )
    assert chunks[0].usage is None
    # Payload bytes from the first token on (the finish event too): the gateway's own count
    # of output tokens when an upstream reports no usage.
    assert chunks[0].content_bytes == sum(
        len(orjson.dumps(c))
        for c in (chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, finish="stop"))
    )
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert chunks[1].data == sse(chunk({}, usage=usage))
    assert chunks[1].usage_only and chunks[1].usage.completion_tokens == 2


async def test_stream_cut_without_done_is_a_connection_error(deployment) -> None:
    stream = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}))
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(f"{BASE}/chat/completions").respond(200, content=stream)
        got = []
        with pytest.raises(UpstreamConnectionError):
            async for c in OpenAICompatProvider(client).stream(call(deployment)):
                got.append(c)
    assert [c.data for c in got] == [stream]  # what had arrived, then the failure


async def test_stream_error_event_mid_stream(deployment) -> None:
    stream = sse(chunk({"content": "Hel"}), {"error": {"message": "overloaded", "type": "x"}})
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(f"{BASE}/chat/completions").respond(200, content=stream)
        with pytest.raises(UpstreamServerError, match="overloaded"):
            [c async for c in OpenAICompatProvider(client).stream(call(deployment))]


async def test_stream_error_status_before_first_byte(deployment) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(f"{BASE}/chat/completions").respond(429, json={"error": {"message": "slow down"}})
        with pytest.raises(UpstreamRateLimitedError):
            [c async for c in OpenAICompatProvider(client).stream(call(deployment))]


async def test_provider_key_echoed_by_upstream_never_reaches_the_client(deployment) -> None:
    echo = {"error": {"message": f"bad request for key {KEY}: 'temperature' must be <= 2"}}
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(f"{BASE}/chat/completions").respond(400, json=echo)
        with pytest.raises(UpstreamBadRequestError) as info:
            await OpenAICompatProvider(client).complete(call(deployment))
        assert KEY not in info.value.message and "[redacted]" in info.value.message
        mock.post(f"{BASE}/chat/completions").respond(400, json=echo)
        with pytest.raises(UpstreamBadRequestError) as info:
            [c async for c in OpenAICompatProvider(client).stream(call(deployment))]
        assert KEY not in info.value.message
