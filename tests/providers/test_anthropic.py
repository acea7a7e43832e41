"""The Anthropic Messages adapter against recorded-style wire examples (respx).

Fixtures in ``anthropic_wire/`` are Messages API bodies, SSE streams and error bodies in the
shapes the API sends them (including a stream cut without ``message_stop``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from app.catalog import ConfigError, load_catalog
from app.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamContextWindowError,
    UpstreamRateLimitedError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from app.providers.anthropic import AnthropicProvider
from app.providers.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    JSON_INSTRUCTION,
    UntranslatableRequestError,
    add_cache_breakpoints,
    to_messages_request,
)
from app.providers.base import UpstreamCall
from tests.conftest import small_config

WIRE = Path(__file__).parent / "anthropic_wire"
BASE = "https://anthropic.test"
URL = f"{BASE}/v1/messages"
KEY = "fake-anthropic-key-for-tests-0000000000"
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Erk"
    "Jggg=="
)


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def wire_json(name: str) -> Any:
    return orjson.loads(wire(name))


def anthropic_deployment(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "anthropic",
        "base_url": BASE,
        "api_key_env": "ANTHROPIC_TEST_KEY",
        "upstream_model": "claude-sonnet-4-6",
        "headers": {"anthropic-beta": "example-beta-2026-01-01"},
        "price": {"input": 3, "cached_input": 0.3, "output": 15},
        "ttft_s": 1.5,
        "decode_tps": 70,
        **extra,
    }


def anthropic_config(**extra: Any) -> dict[str, Any]:
    config = small_config(**{"big@anthropic": anthropic_deployment(**extra)})
    config["models"]["big"]["max_output_tokens"] = 8000
    return config


@pytest.fixture
def load(write_config):
    def make(**extra: Any):
        path = write_config(anthropic_config(**extra))
        return load_catalog(path, env={"ANTHROPIC_TEST_KEY": KEY}).by_id["big@anthropic"]

    return make


@pytest.fixture
def deployment(load):
    return load()


def call(dep, prompt_cache: bool | None = None, **body: Any) -> UpstreamCall:
    payload = {"model": "big", "messages": [{"role": "user", "content": "hi"}], **body}
    return UpstreamCall(dep, payload, "rid-1", 1.0, 2.0, 5.0, prompt_cache=prompt_cache)


def translate(prompt_cache: bool = False, **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_messages_request(
        body,
        upstream_model="claude-sonnet-4-6",
        max_output_tokens=8000,
        stream=False,
        prompt_cache=prompt_cache,
    )


# -- request translation ----------------------------------------------------------------------
async def test_sends_messages_request_with_anthropic_headers(deployment) -> None:
    async with respx.mock(assert_all_called=True) as mock, httpx.AsyncClient() as client:
        route = mock.post(URL).respond(200, json=wire_json("message_text.json"))
        await AnthropicProvider(client).complete(call(deployment))
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "example-beta-2026-01-01"
    assert "authorization" not in sent.headers
    body = orjson.loads(sent.content)
    assert body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_system_and_developer_messages_become_top_level_system() -> None:
    out = translate(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Ça va?"},
        ]
    )
    assert out["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Answer in French."},
    ]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


def test_consecutive_same_role_turns_are_merged_and_empty_ones_dropped() -> None:
    out = translate(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "a1"},
            {"role": "assistant", "content": "a2"},
            {"role": "user", "content": "third"},
        ]
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a1"}, {"type": "text", "text": "a2"}],
        },
        {"role": "user", "content": [{"type": "text", "text": "third"}]},
    ]


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    out = translate(
        messages=[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "{ "}]
    )
    assert out["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "{"}]}


def test_images_and_pdfs_become_source_blocks() -> None:
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x"}},
                ],
            }
        ]
    )
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert blocks[3] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }


@pytest.mark.parametrize(
    ("part", "says"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}, "image/bmp"),
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "data: URL"),
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "input_audio"),
    ],
)
def test_parts_anthropic_cannot_take_are_named(part, says) -> None:
    with pytest.raises(UntranslatableRequestError) as info:
        translate(messages=[{"role": "user", "content": [part]}])
    assert says in str(info.value) and "messages[0].content[0]" in str(info.value)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"type": "tool", "name": "get_time"},
        ),
    ],
)
def test_tools_and_tool_choice(choice, expected) -> None:
    out = translate(tools=TOOLS, tool_choice=choice)
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": TOOLS[0]["function"]["parameters"],
            "strict": True,
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out.get("tool_choice") == expected


def test_parallel_tool_calls_false_disables_parallel_use() -> None:
    assert translate(tools=TOOLS, parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert translate(tools=TOOLS, tool_choice="required", parallel_tool_calls=False)[
        "tool_choice"
    ] == {"type": "any", "disable_parallel_tool_use": True}


def test_tool_calls_and_tool_results_round_trip() -> None:
    out = translate(
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "14:05"}],
            },
            {"role": "user", "content": "Thanks, summarise."},
        ],
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "get_weather",
                "input": {"location": "Paris"},
            },
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "14:05"}],
            },
            {"type": "text", "text": "Thanks, summarise."},
        ],
    }
    assert len(out["messages"]) == 3


def test_bad_tool_arguments_and_missing_tool_call_id_are_named() -> None:
    bad_args = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "not json"}}],
    }
    with pytest.raises(UntranslatableRequestError, match=r"tool_calls\[0\]\.function\.arguments"):
        translate(messages=[{"role": "user", "content": "x"}, bad_args])
    with pytest.raises(UntranslatableRequestError, match="tool_call_id"):
        translate(messages=[{"role": "tool", "content": "18C"}])


def test_sampling_stop_and_user_parameters() -> None:
    out = translate(temperature=1.7, top_p=0.5, stop="END", user="user-42", seed=7, logprobs=True)
    assert out["temperature"] == 1.0  # Anthropic's range is 0..1
    assert "top_p" not in out  # recent Claude models reject temperature and top_p together
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "user-42"}
    assert "seed" not in out and "logprobs" not in out
    out = translate(top_p=0.9, stop=["\n\nHuman:", "  ", "###"])
    assert out["top_p"] == 0.9 and "temperature" not in out
    assert out["stop_sequences"] == ["\n\nHuman:", "###"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, DEFAULT_MAX_TOKENS),
        ({"max_tokens": 300}, 300),
        ({"max_completion_tokens": 200, "max_tokens": 300}, 200),
        ({"max_tokens": 100_000}, 8000),
    ],
)
def test_max_tokens_default_and_bound(body, expected) -> None:
    assert translate(**body)["max_tokens"] == expected
    small = to_messages_request(
        {"messages": [{"role": "user", "content": "x"}]},
        upstream_model="m",
        max_output_tokens=1024,
        stream=True,
    )
    assert small["max_tokens"] == 1024 and small["stream"] is True


def test_response_format_json_modes() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    out = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    out = translate(
        messages=[{"role": "system", "content": "Extract."}, {"role": "user", "content": "Bob"}],
        response_format={"type": "json_object"},
    )
    assert out["system"] == [
        {"type": "text", "text": "Extract."},
        {"type": "text", "text": JSON_INSTRUCTION},
    ]
    assert "output_config" not in translate(response_format={"type": "text"})


async def test_untranslatable_request_is_a_client_error_without_an_upstream_call(
    deployment,
) -> None:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as client:
        route = mock.post(URL).respond(200, json=wire_json("message_text.json"))
        with pytest.raises(UpstreamBadRequestError) as info:
            await AnthropicProvider(client).complete(call(deployment, n=2))
    assert not route.called
    assert info.value.status == 400 and not info.value.retryable
    assert "'n'" in info.value.message and "big@anthropic" in info.value.message


# -- prompt cache -----------------------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "You are a patient tutor." * 20},
    {"role": "user", "content": "Turn 1"},
    {"role": "assistant", "content": "Answer 1"},
    {"role": "user", "content": "Turn 2"},
    {"role": "assistant", "content": "Answer 2"},
    {"role": "user", "content": "Turn 3"},
]
EPHEMERAL = {"type": "ephemeral"}


def test_cache_breakpoints_on_system_last_message_and_previous_turn() -> None:
    out = translate(messages=CONVERSATION, prompt_cache=True)
    assert out["system"][-1]["cache_control"] == EPHEMERAL
    marked = [i for i, m in enumerate(out["messages"]) if "cache_control" in m["content"][-1]]
    assert marked == [2, 4]  # "Turn 2" (read the previous entry) and "Turn 3" (write this one)
    plain = translate(messages=CONVERSATION)
    assert "cache_control" not in orjson.dumps(plain).decode()


def test_cache_breakpoints_respect_the_limit_and_do_not_mutate() -> None:
    messages = copy.deepcopy(CONVERSATION)
    messages[1]["content"] = [
        {"type": "text", "text": "a", "cache_control": EPHEMERAL},
        {"type": "text", "text": "b", "cache_control": EPHEMERAL},
    ]
    out = translate(messages=messages)
    before = copy.deepcopy(out)
    cached = add_cache_breakpoints(out)
    assert out == before
    assert orjson.dumps(cached).count(b"cache_control") == 4  # 2 from the client + 2 added
    assert cached["system"][-1]["cache_control"] == EPHEMERAL
    assert cached["messages"][-1]["content"][-1]["cache_control"] == EPHEMERAL


def test_cache_breakpoint_on_tools_when_there_is_no_system_prompt() -> None:
    out = translate(tools=TOOLS, prompt_cache=True)
    assert out["tools"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in out["tools"][0]


async def test_prompt_cache_from_deployment_and_per_call_override(load) -> None:
    dep = load(prompt_cache=True)
    assert dep.prompt_cache is True
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(URL).respond(200, json=wire_json("message_text.json"))
        provider = AnthropicProvider(client)
        await provider.complete(call(dep, messages=CONVERSATION))
        assert b'"cache_control":{"type":"ephemeral"}' in route.calls.last.request.content
        await provider.complete(call(dep, prompt_cache=False, messages=CONVERSATION))
        assert b"cache_control" not in route.calls.last.request.content


def test_prompt_cache_is_rejected_on_other_kinds(write_config) -> None:
    config = small_config()
    config["deployments"]["small@sim"]["prompt_cache"] = True
    with pytest.raises(ConfigError) as info:
        load_catalog(write_config(config))
    assert "small@sim: prompt_cache applies to kind anthropic only" in str(info.value)


# -- response translation ---------------------------------------------------------------------
async def complete(dep, fixture: str, **body: Any):
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(URL).respond(200, json=wire_json(fixture))
        return await AnthropicProvider(client).complete(call(dep, **body))


async def test_text_answer_with_cache_usage(deployment) -> None:
    result = await complete(deployment, "message_text.json")
    body = result.body
    assert body["object"] == "chat.completion" and body["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert body["model"] == "claude-sonnet-4-6"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello! How can I help you today?"}
    assert choice["finish_reason"] == "stop"
    # prompt_tokens counts fresh + cache-read + cache-creation input tokens.
    assert body["usage"] == {
        "prompt_tokens": 21 + 3400 + 1250,
        "completion_tokens": 12,
        "total_tokens": 21 + 3400 + 1250 + 12,
        "prompt_tokens_details": {"cached_tokens": 3400},
    }
    assert result.usage.cached_tokens == 3400 and result.usage.cache_creation_tokens == 1250


async def test_one_hour_cache_writes_are_told_apart(deployment) -> None:
    message = wire_json("message_text.json")
    message["usage"]["cache_creation"] = {
        "ephemeral_5m_input_tokens": 250,
        "ephemeral_1h_input_tokens": 1000,
    }
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(URL).respond(200, json=message)
        usage = (await AnthropicProvider(client).complete(call(deployment))).usage
    assert usage.cache_creation_tokens == 1250 and usage.cache_creation_1h_tokens == 1000
    assert usage.prompt_tokens == 21 + 3400 + 1250


async def test_tool_use_answer_becomes_tool_calls(deployment) -> None:
    body = (await complete(deployment, "message_tool_use.json", tools=TOOLS)).body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather in Paris."
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["id"] == "toolu_01A09q90qw90lq917835lq9" and tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert orjson.loads(tool_call["function"]["arguments"]) == {
        "location": "Paris, France",
        "unit": "celsius",
    }
    assert body["usage"]["prompt_tokens"] == 384 and body["usage"]["completion_tokens"] == 58


async def test_max_tokens_stop_is_length(deployment) -> None:
    body = (await complete(deployment, "message_max_tokens.json")).body
    assert body["choices"][0]["finish_reason"] == "length"


# -- streaming --------------------------------------------------------------------------------
async def stream_chunks(dep, content: Any, status: int = 200, headers=None, **body: Any):
    chunks = []
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(URL).respond(
            status,
            content=content,
            headers={"content-type": "text/event-stream", **(headers or {})},
        )
        async for chunk in AnthropicProvider(client).stream(call(dep, stream=True, **body)):
            chunks.append(chunk)
    return chunks


def event(c) -> dict[str, Any]:
    """The one SSE event a translated chunk holds, framed for the client."""
    assert c.data.startswith(b"data: ") and c.data.endswith(b"\n\n")
    assert c.data.count(b"\n") == 2
    return orjson.loads(c.data[6:-2])


def deltas(chunks) -> list[dict[str, Any]]:
    return [event(c)["choices"][0]["delta"] for c in chunks if event(c)["choices"]]


async def test_text_stream_chunk_by_chunk(deployment) -> None:
    chunks = await stream_chunks(deployment, wire("stream_text.sse"))
    parsed = [event(c) for c in chunks]
    assert all(p["object"] == "chat.completion.chunk" for p in parsed)
    assert {p["id"] for p in parsed} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert {p["model"] for p in parsed} == {"claude-sonnet-4-6"}
    assert [p["choices"][0]["delta"] if p["choices"] else None for p in parsed] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": "!"},
        {},
        None,
    ]
    assert [c.content for c in chunks] == [False, True, True, False, False]
    assert parsed[3]["choices"][0]["finish_reason"] == "stop" and chunks[3].finish_reason == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.usage_only and parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == {
        "prompt_tokens": 25 + 2048,
        "completion_tokens": 15,
        "total_tokens": 25 + 2048 + 15,
        "prompt_tokens_details": {"cached_tokens": 2048},
    }
    assert usage_chunk.usage.cached_tokens == 2048


async def test_tool_use_stream_becomes_tool_call_deltas(deployment) -> None:
    chunks = await stream_chunks(deployment, wire("stream_tool_use.sse"), tools=TOOLS)
    got = deltas(chunks)
    assert got[0] == {"role": "assistant", "content": ""}
    assert got[1] == {"content": "Let me check."}  # the thinking block is not forwarded
    calls = [d["tool_calls"][0] for d in got if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    first = "".join(c["function"]["arguments"] for c in calls if c["index"] == 0)
    assert orjson.loads(first) == {"location": "San Francisco, CA"}
    assert calls[-2]["id"] == "toolu_02Bz8w1Yl0mQWeAAAAAA" and calls[-2]["index"] == 1
    assert orjson.loads(calls[-1]["function"]["arguments"]) == {"tz": "PST"}
    assert chunks[-2].finish_reason == "tool_calls"
    usage = chunks[-1].usage
    assert usage.prompt_tokens == 472 + 300 and usage.cache_creation_tokens == 300
    assert usage.completion_tokens == 89


async def test_stream_usage_keeps_cache_writes_and_their_one_hour_part(deployment) -> None:
    chunks = await stream_chunks(deployment, wire("stream_cache_write.sse"))
    usage = chunks[-1].usage
    assert usage.prompt_tokens == 40 + 2000 + 5000 and usage.completion_tokens == 20
    assert usage.cached_tokens == 2000
    # message_delta repeats the totals without the breakdown: message_start's 1h part stays.
    assert usage.cache_creation_tokens == 5000 and usage.cache_creation_1h_tokens == 4000


async def test_stream_start_carries_the_prompt_usage_for_a_cut_stream(deployment) -> None:
    seen = []
    with pytest.raises(UpstreamConnectionError):
        async with respx.mock() as mock, httpx.AsyncClient() as client:
            mock.post(URL).respond(200, content=wire("stream_cut_cached.sse"))
            async for chunk in AnthropicProvider(client).stream(call(deployment, stream=True)):
                seen.append(chunk)
    start = seen[0].prompt_usage
    assert start is not None and not seen[0].content  # in the head, before the first token
    assert (start.prompt_tokens, start.cached_tokens) == (40 + 2000 + 5000, 2000)
    assert (start.cache_creation_tokens, start.cache_creation_1h_tokens) == (5000, 4000)
    assert all(chunk.usage is None for chunk in seen)  # no final usage: it never came
    assert all(chunk.prompt_usage is None for chunk in seen[1:])


async def test_stream_split_anywhere_with_crlf_lines(deployment) -> None:
    raw = wire("stream_text.sse").replace(b"\n", b"\r\n")

    async def pieces():
        for i in range(0, len(raw), 7):
            yield raw[i : i + 7]

    chunks = await stream_chunks(deployment, pieces())
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "Hello!"
    assert chunks[-1].usage.completion_tokens == 15


async def test_error_event_mid_stream_raises_overloaded_as_5xx(deployment) -> None:
    seen = []
    with pytest.raises(UpstreamServerError) as info:
        async with respx.mock() as mock, httpx.AsyncClient() as client:
            mock.post(URL).respond(200, content=wire("stream_error.sse"))
            async for chunk in AnthropicProvider(client).stream(call(deployment, stream=True)):
                seen.append(chunk)
    assert [d.get("content") for d in deltas(seen)] == ["", "The answer"]
    exc = info.value
    assert exc.fallback_reason == "upstream_5xx" and exc.upstream_status == 529
    assert "overloaded_error mid-stream" in exc.message and "big@anthropic" in exc.message


async def test_error_event_before_first_token_is_retryable(deployment) -> None:
    with pytest.raises(UpstreamServerError) as info:
        await stream_chunks(deployment, wire("stream_error_before_text.sse"))
    assert info.value.retryable


async def test_stream_cut_without_message_stop(deployment) -> None:
    seen = []
    with pytest.raises(UpstreamConnectionError) as info:
        async with respx.mock() as mock, httpx.AsyncClient() as client:
            mock.post(URL).respond(200, content=wire("stream_cut.sse"))
            async for chunk in AnthropicProvider(client).stream(call(deployment, stream=True)):
                seen.append(chunk)
    assert deltas(seen)[-1] == {"content": "Partial ans"}
    assert info.value.fallback_reason == "connection_error"
    assert "without message_stop" in info.value.message


async def test_stream_rejected_before_first_byte_keeps_retry_after(deployment) -> None:
    with pytest.raises(UpstreamRateLimitedError) as info:
        await stream_chunks(
            deployment, wire("error_rate_limit_429.json"), status=429, headers={"retry-after": "12"}
        )
    assert info.value.retry_after == 12.0 and info.value.fallback_reason == "rate_limited"


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "fixture", "headers", "error", "reason"),
    [
        (529, "error_overloaded_529.json", {}, UpstreamServerError, "upstream_5xx"),
        (500, "error_api_500.json", {}, UpstreamServerError, "upstream_5xx"),
        (
            429,
            "error_rate_limit_429.json",
            {"retry-after": "30"},
            UpstreamRateLimitedError,
            "rate_limited",
        ),
        (401, "error_auth_401.json", {}, UpstreamAuthError, "auth_failed"),
        (403, "error_permission_403.json", {}, UpstreamAuthError, "auth_failed"),
        (402, "error_billing_402.json", {}, UpstreamAuthError, "auth_failed"),
        (400, "error_prompt_too_long_400.json", {}, UpstreamContextWindowError, "context_window"),
        (400, "error_context_limit_400.json", {}, UpstreamContextWindowError, "context_window"),
    ],
)
async def test_error_bodies_map_to_fallback_reasons(
    deployment, status, fixture, headers, error, reason
) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(URL).respond(status, content=wire(fixture), headers=headers)
        with pytest.raises(error) as info:
            await AnthropicProvider(client).complete(call(deployment))
    exc = info.value
    assert exc.fallback_reason == reason and exc.retryable
    assert KEY not in exc.message and "big@anthropic" in exc.message
    if status == 429:
        assert exc.retry_after == 30.0 and exc.status == 429
    if status in (401, 402, 403):
        assert exc.status == 502 and not exc.retry_same


async def test_invalid_request_is_the_clients_and_never_echoes_the_key(deployment) -> None:
    echoed = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"bad header value {KEY}"},
    }
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(URL)
        route.side_effect = [
            httpx.Response(400, content=wire("error_invalid_400.json")),
            httpx.Response(400, json=echoed),
        ]
        provider = AnthropicProvider(client)
        with pytest.raises(UpstreamBadRequestError) as info:
            await provider.complete(call(deployment))
        assert "image/png media type" in info.value.message and not info.value.retryable
        with pytest.raises(UpstreamBadRequestError) as info:
            await provider.complete(call(deployment))
        assert KEY not in info.value.message and "[redacted]" in info.value.message


async def test_transport_failures_map_to_timeouts(deployment) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        route = mock.post(URL)
        route.side_effect = httpx.ConnectTimeout("slow")
        with pytest.raises(UpstreamTimeoutError) as info:
            await AnthropicProvider(client).complete(call(deployment))
        assert info.value.fallback_reason == "timeout_connect"
        route.side_effect = httpx.ReadTimeout("no first byte")
        with pytest.raises(UpstreamTimeoutError) as info:
            async for _ in AnthropicProvider(client).stream(call(deployment, stream=True)):
                pass
        assert info.value.fallback_reason == "timeout_first_token"


async def test_silent_upstream_non_stream_waits_only_the_first_byte_budget(deployment) -> None:
    """Same contract as openai_compat: the read timeout is the first-byte budget (2 s here),
    not the total timeout (5 s), and the failure is a first-token timeout."""
    seen: list[float] = []

    def silent(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        raise httpx.ReadTimeout("no first byte")

    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(URL).mock(side_effect=silent)
        with pytest.raises(UpstreamTimeoutError) as info:
            await AnthropicProvider(client).complete(call(deployment))
    assert info.value.fallback_reason == "timeout_first_token"
    assert seen == [2.0]


async def test_non_message_body_is_an_invalid_response(deployment) -> None:
    async with respx.mock() as mock, httpx.AsyncClient() as client:
        mock.post(URL).respond(200, json={"completion": "legacy"})
        with pytest.raises(Exception) as info:
            await AnthropicProvider(client).complete(call(deployment))
    assert getattr(info.value, "fallback_reason", None) == "invalid_response"
