"""An Anthropic deployment behind the whole in-process gateway, driven by the openai SDK.

The gateway's own HTTP surface is reached through ASGI; the Anthropic API is a respx mock
answering with the recorded-style wire examples of ``anthropic_wire/``.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import orjson
import pytest
import respx
from structlog.testing import capture_logs

from tests.conftest import small_config
from tests.providers.test_anthropic import KEY, URL, anthropic_deployment, wire, wire_json

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


# USD per million tokens; no cache_write given, so writes cost 1.25x (5 min) / 2x (1 h) input.
CHEAP = {"input": 0.5, "cached_input": 0.05, "output": 1}


@pytest.fixture
async def sdk(app_client, monkeypatch):
    """An AsyncOpenAI client talking to a gateway whose cheapest ``big`` is on Anthropic."""
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", KEY)
    cheap = anthropic_deployment(price=CHEAP)
    gateway = await app_client(small_config(**{"big@anthropic": cheap}))
    return openai.AsyncOpenAI(
        base_url="http://gateway/v1", api_key="unused", max_retries=0, http_client=gateway
    )


async def test_openai_request_in_openai_answer_out(sdk) -> None:
    async with respx.mock() as mock:
        route = mock.post(URL).respond(200, content=wire("message_tool_use.json"))
        raw = await sdk.chat.completions.with_raw_response.create(
            model="big",
            messages=[
                {"role": "system", "content": "You are a weather bot."},
                {"role": "user", "content": "Weather in Paris?"},
            ],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_tokens=256,
        )
    completion = raw.parse()
    assert raw.headers["x-pareto-deployment"] == "big@anthropic"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert (
        json.loads(choice.message.tool_calls[0].function.arguments)["location"] == "Paris, France"
    )
    assert completion.usage.prompt_tokens == 384 and completion.usage.completion_tokens == 58
    sent: dict[str, Any] = orjson.loads(route.calls.last.request.content)
    assert sent["system"] == [{"type": "text", "text": "You are a weather bot."}]
    assert sent["tool_choice"] == {"type": "any"} and sent["max_tokens"] == 256
    assert sent["model"] == "claude-sonnet-4-6"
    assert route.calls.last.request.headers["x-api-key"] == KEY


async def test_streaming_with_usage_through_the_gateway(sdk) -> None:
    async with respx.mock() as mock:
        mock.post(URL).respond(
            200, content=wire("stream_text.sse"), headers={"content-type": "text/event-stream"}
        )
        stream = await sdk.chat.completions.create(
            model="big",
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
    assert text == "Hello!" and finish == "stop"
    assert usage is not None and usage.prompt_tokens == 25 + 2048
    assert usage.prompt_tokens_details.cached_tokens == 2048


async def test_overloaded_anthropic_fails_over_before_the_first_token(sdk) -> None:
    async with respx.mock() as mock:
        mock.post(URL).respond(529, content=wire("error_overloaded_529.json"))
        raw = await sdk.chat.completions.with_raw_response.create(
            model="big", messages=[{"role": "user", "content": "hi"}]
        )
        stream = await sdk.chat.completions.create(
            model="big", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert raw.headers["x-pareto-deployment"] == "big@sim"
    assert raw.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    assert raw.parse().choices[0].message.content
    assert text


async def test_auth_failure_is_a_gateway_error_without_the_key(app_client, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", KEY)
    config = small_config(**{"big@anthropic": anthropic_deployment()})
    del config["deployments"]["big@sim"]
    gateway = await app_client(config)
    async with respx.mock() as mock:
        mock.post(URL).respond(401, content=wire("error_auth_401.json"))
        response = await gateway.post(
            "/v1/chat/completions",
            json={"model": "big", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_auth_failed" and "big@anthropic" in error["message"]
    assert KEY not in response.text


async def test_error_event_after_first_token_ends_the_stream_with_an_error(sdk) -> None:
    async with respx.mock() as mock:
        mock.post(URL).respond(200, content=wire("stream_error.sse"))
        stream = await sdk.chat.completions.create(
            model="big", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = ""
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
    assert text == "The answer"
    assert "upstream_5xx" in str(info.value)


def request_record(logs: list[dict[str, Any]]) -> dict[str, Any]:
    (record,) = [e for e in logs if e.get("event") == "request"]
    return record


async def test_cache_writes_are_billed_above_input_non_streaming(sdk) -> None:
    message = wire_json("message_text.json")  # 21 fresh, 3400 read, 1250 written, 12 out
    message["usage"]["cache_creation"] = {
        "ephemeral_5m_input_tokens": 250,
        "ephemeral_1h_input_tokens": 1000,
    }
    with capture_logs() as logs:
        async with respx.mock() as mock:
            mock.post(URL).respond(200, json=message)
            raw = await sdk.chat.completions.with_raw_response.create(
                model="big", messages=[{"role": "user", "content": "hi"}]
            )
    expected = (21 * 0.5 + 3400 * 0.05 + 250 * 0.625 + 1000 * 1.0 + 12 * 1) / 1e6
    record = request_record(logs)
    assert record["deployment"] == "big@anthropic"
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert float(raw.headers["x-pareto-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    assert record["cache_write_input_tokens"] == 1250
    assert record["cached_input_tokens"] == 3400 and record["input_tokens"] == 21 + 3400 + 1250


async def test_cache_writes_are_billed_above_input_streaming(sdk) -> None:
    with capture_logs() as logs:
        async with respx.mock() as mock:
            mock.post(URL).respond(
                200,
                content=wire("stream_cache_write.sse"),
                headers={"content-type": "text/event-stream"},
            )
            stream = await sdk.chat.completions.create(
                model="big", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello!"
    # 40 fresh, 2000 read, 5000 written (4000 to the 1-hour cache), 20 out.
    expected = (40 * 0.5 + 2000 * 0.05 + 1000 * 0.625 + 4000 * 1.0 + 20 * 1) / 1e6
    record = request_record(logs)
    assert record["stream"] is True and record["deployment"] == "big@anthropic"
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert record["cache_write_input_tokens"] == 5000


async def test_a_stream_cut_before_message_stop_is_priced_with_its_cache_breakdown(sdk) -> None:
    with capture_logs() as logs:
        async with respx.mock() as mock:
            mock.post(URL).respond(
                200,
                content=wire("stream_cut_cached.sse"),
                headers={"content-type": "text/event-stream"},
            )
            stream = await sdk.chat.completions.create(
                model="big", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = ""
            with pytest.raises(openai.APIError):
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
    assert text.startswith("The first half")
    record = request_record(logs)
    assert record["deployment"] == "big@anthropic" and record["status"] == 502
    # message_start's breakdown survives the cut: 40 fresh, 2000 read, 5000 written (4000 to
    # the 1-hour cache); only the output is counted by the gateway.
    assert record["input_tokens"] == 40 + 2000 + 5000
    assert record["cached_input_tokens"] == 2000 and record["cache_write_input_tokens"] == 5000
    assert record["usage_counted_by_gateway"] is True
    out = record["output_tokens"]
    assert out >= 1
    expected = (40 * 0.5 + 2000 * 0.05 + 1000 * 0.625 + 4000 * 1.0 + out * 1) / 1e6
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
