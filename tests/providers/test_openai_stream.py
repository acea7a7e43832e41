"""SSE in: an OpenAI-compatible stream cut into chunks per network read, whatever the reads.

The reader is fed bytes the way a socket delivers them (events split mid-JSON, mid blank
line, several events and [DONE] in one read, ``\\r\\n`` line ends); the gateway tests at the
bottom check what a client receives through the whole app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from app.errors import UpstreamInvalidResponseError, UpstreamServerError
from app.providers.base import StreamChunk
from app.providers.openai_stream import ChunkReader
from tests.conftest import small_config

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m-up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


ROLE = chunk({"role": "assistant", "content": ""})
TOKENS = [chunk({"content": f"tok{i} "}) for i in range(6)]
FINISH = chunk({}, finish="stop")
USAGE_EVENT = orjson.dumps(
    {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
)
EVENTS = [ROLE, *TOKENS, FINISH, USAGE_EVENT]


def sse(*payloads: bytes, sep: bytes = b"\n\n", prefix: bytes = b"data: ") -> bytes:
    return b"".join(prefix + p + sep for p in payloads)


STREAM = sse(*EVENTS, b"[DONE]")


def feed_all(reads: list[bytes]) -> tuple[list[StreamChunk], ChunkReader]:
    reader = ChunkReader("m@up")
    out: list[StreamChunk] = []
    for raw in reads:
        out.extend(reader.feed(raw))
        if reader.done or reader.error:
            break
    return out, reader


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def check_whole_stream(chunks: list[StreamChunk], reader: ChunkReader) -> None:
    """Whatever the reads: the same bytes in order, the usage apart, the flags right."""
    assert reader.done and reader.error is None
    body = [c for c in chunks if not c.usage_only]
    assert b"".join(c.data for c in body) == sse(ROLE, *TOKENS, FINISH)
    (usage,) = [c for c in chunks if c.usage_only]
    assert usage is chunks[-1] and usage.data == sse(USAGE_EVENT)
    assert usage.usage is not None and usage.usage.completion_tokens == 3
    # Every event relayed after the first token counts (the finish event too): the size the
    # gateway estimates output tokens from when the upstream reports no usage.
    assert sum(c.content_bytes for c in chunks) == sum(len(t) for t in TOKENS) + len(FINISH)
    assert all(c.finish_reason is None for c in chunks)  # not read (nothing uses it)
    first = next(i for i, c in enumerate(body) if c.content)
    # Nothing before the first content chunk carries a token (failover stays invisible).
    assert TOKENS[0] in body[first].data
    assert all(c.data.count(b"tok") == 0 for c in body[:first])


def test_one_read_is_one_chunk_plus_the_usage_event() -> None:
    chunks, reader = feed_all([STREAM])
    check_whole_stream(chunks, reader)
    assert len(chunks) == 2 and chunks[0].content


def test_spaced_json_usage_is_still_read() -> None:
    # Python's json.dumps spaces its JSON ("usage": {...}); the usage must still be read
    # (billing) and its event kept apart (hidden unless asked).
    def spaced(raw: bytes) -> bytes:
        return json.dumps(orjson.loads(raw)).encode()

    tokens = [spaced(t) for t in TOKENS]
    stream = sse(spaced(ROLE), *tokens, spaced(FINISH), spaced(USAGE_EVENT), b"[DONE]")
    chunks, reader = feed_all([stream])
    assert reader.done and reader.error is None
    (usage,) = [c for c in chunks if c.usage_only]
    assert usage.usage is not None and usage.usage.completion_tokens == 3
    assert b"".join(c.data for c in chunks if not c.usage_only) == sse(
        spaced(ROLE), *tokens, spaced(FINISH)
    )
    assert sum(c.content_bytes for c in chunks) == sum(len(t) for t in tokens) + len(spaced(FINISH))


def test_event_by_event_reads() -> None:
    events = [sse(p) for p in [*EVENTS, b"[DONE]"]]
    chunks, reader = feed_all(events)
    check_whole_stream(chunks, reader)
    # After the first token every forwarded event is marked content (the finish event too:
    # the reader does not look inside plain events); the usage event is apart.
    assert [c.content for c in chunks] == [False] + [True] * 7 + [False]


def test_events_split_across_reads_wait_for_their_blank_line() -> None:
    reader = ChunkReader("m@up")
    first = sse(ROLE, TOKENS[0])
    assert reader.feed(first[:10]) == []
    (role,) = reader.feed(first[10:-1])  # mid blank line: the token is not complete yet
    assert role.data == sse(ROLE) and not role.content
    (token,) = reader.feed(first[-1:] + sse(TOKENS[1])[:25])
    assert token.data == sse(TOKENS[0]) and token.content
    (rest,) = reader.feed(sse(TOKENS[1])[25:])
    assert rest.data == sse(TOKENS[1]) and rest.content_bytes == len(TOKENS[1])


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_stream_forwards_the_same_bytes(cuts: list[int]) -> None:
    chunks, reader = feed_all(split(STREAM, cuts))
    check_whole_stream(chunks, reader)


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_crlf_line_ends_any_split(cuts: list[int]) -> None:
    stream = sse(*EVENTS, b"[DONE]", sep=b"\r\n\r\n")
    chunks, reader = feed_all(split(stream, cuts))
    check_whole_stream(chunks, reader)  # re-framed with "\n\n" for the client


JUNK = [b"", b": keep-alive\n\n", b"\n", b"event: message\n", b"id: 7\n"]


@settings(max_examples=200, deadline=None)
@given(
    junk=st.lists(st.sampled_from(JUNK), min_size=len(EVENTS) + 1, max_size=len(EVENTS) + 1),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_comments_fields_and_blank_lines_are_dropped_in_any_split(
    junk: list[bytes], crlf: bool, cuts: list[int]
) -> None:
    stream = b"".join(
        j + b"data: " + p + b"\n\n" for j, p in zip(junk, [*EVENTS, b"[DONE]"], strict=True)
    )
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    chunks, reader = feed_all(split(stream, cuts))
    check_whole_stream(chunks, reader)  # the client sees plain "data: " events only


def test_several_events_and_done_in_one_read_stop_at_done() -> None:
    chunks, reader = feed_all([sse(ROLE, TOKENS[0]), sse(*TOKENS[1:], FINISH, b"[DONE]") + b"x"])
    assert reader.done
    assert b"".join(c.data for c in chunks) == sse(ROLE, *TOKENS, FINISH)
    assert not chunks[-1].usage_only


def test_usage_on_a_chunk_with_choices_stays_in_it() -> None:
    last = orjson.loads(FINISH)
    last["usage"] = USAGE
    final = orjson.dumps(last)
    (only,), reader = feed_all([sse(ROLE, TOKENS[0], final, b"[DONE]")])
    assert not only.usage_only and only.usage is not None
    assert only.data == sse(ROLE, TOKENS[0], final)


def test_error_event_mid_read_ends_the_stream_after_what_came_before() -> None:
    error = b'{"error":{"message":"overloaded","type":"server_error"}}'
    chunks, reader = feed_all([sse(ROLE, TOKENS[0]), sse(TOKENS[1], error, TOKENS[2])])
    assert b"".join(c.data for c in chunks) == sse(ROLE, TOKENS[0], TOKENS[1])
    assert isinstance(reader.error, UpstreamServerError)
    assert "overloaded" in reader.error.message and not reader.done


def test_error_key_inside_a_token_is_not_an_error() -> None:
    token = chunk({"content": '{"error": 1}'})  # quotes are escaped inside the JSON string
    nested = orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x"}}], "x": {"error": 1}})
    chunks, reader = feed_all([sse(ROLE, TOKENS[0], token, nested, b"[DONE]")])
    assert reader.done and reader.error is None
    assert b"".join(c.data for c in chunks) == sse(ROLE, TOKENS[0], token, nested)


def test_invalid_json_before_the_first_token_is_an_invalid_response() -> None:
    chunks, reader = feed_all([sse(b"{not json", TOKENS[0])])
    assert chunks == [] and isinstance(reader.error, UpstreamInvalidResponseError)


def test_comments_fields_and_multiline_data_are_reframed() -> None:
    raw = (
        b": keep-alive\n\n"
        + b"event: message\nid: 1\ndata:"
        + ROLE
        + b"\n\n"
        + b"data: "
        + TOKENS[0]
        + b"\n\n"
        + b"data: "
        + TOKENS[1][:20]
        + b"\ndata: "
        + TOKENS[1][20:]
        + b"\n\n"
        + sse(TOKENS[2], b"[DONE]")
    )
    chunks, reader = feed_all([raw])
    assert reader.done
    data = b"".join(c.data for c in chunks)
    assert data == sse(ROLE, TOKENS[0]) + b"data: " + TOKENS[1][:20] + b"\ndata: " + TOKENS[1][
        20:
    ] + b"\n\n" + sse(TOKENS[2])
    assert chunks[0].content


# -- through the gateway ----------------------------------------------------------------------
BASE = "https://upstream.test/v1"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def gateway(app_client, monkeypatch) -> httpx.AsyncClient:
    monkeypatch.setenv("REMOTE_KEY", "test-key-abcdefghijklmnop")
    remote = {
        "kind": "openai_compat",
        "base_url": BASE,
        "api_key_env": "REMOTE_KEY",
        "upstream_model": "m-up",
        "price": {"input": 0.5, "output": 1},
        "ttft_s": 0.01,
        "decode_tps": 1000,
    }
    client: httpx.AsyncClient = await app_client(small_config(**{"big@remote": remote}))
    return client


def reads(*parts: bytes) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return body()


def client_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    return text[:-2].split("\n\n")


@pytest.mark.parametrize("want_usage", [False, True])
async def test_client_gets_the_upstream_bytes_and_usage_only_when_asked(
    gateway, want_usage: bool
) -> None:
    body: dict[str, Any] = {"model": "big", "messages": MSG, "stream": True}
    if want_usage:
        body["stream_options"] = {"include_usage": True}
    async with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").respond(
            200, content=reads(STREAM[:100], STREAM[100:700], STREAM[700:])
        )
        with capture_logs() as logs:
            r = await gateway.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-pareto-deployment"] == "big@remote"
    wanted = sse(*EVENTS, b"[DONE]") if want_usage else sse(ROLE, *TOKENS, FINISH, b"[DONE]")
    assert r.content == wanted
    (rec,) = [e for e in logs if e.get("event") == "request"]
    assert rec["output_tokens"] == 3 and rec["usage_counted_by_gateway"] is False


async def test_counted_usage_when_the_upstream_reports_none(gateway) -> None:
    stream = sse(ROLE, *TOKENS, FINISH, b"[DONE]")
    async with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").respond(200, content=reads(stream))
        with capture_logs() as logs:
            r = await gateway.post(
                "/v1/chat/completions",
                json={
                    "model": "big",
                    "messages": MSG,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            )
    events = client_events(r.text)
    assert events[-1] == "data: [DONE]"
    usage = orjson.loads(events[-2].removeprefix("data: "))["usage"]
    (rec,) = [e for e in logs if e.get("event") == "request"]
    assert rec["usage_counted_by_gateway"] is True
    # The gateway's count: payload bytes relayed from the first token on / 40 (every token,
    # the first one included, and the finish event).
    counted = (sum(map(len, TOKENS)) + len(FINISH)) // 40
    assert usage["completion_tokens"] == rec["output_tokens"] == counted


async def test_error_event_mid_read_ends_the_client_stream_with_an_error(gateway) -> None:
    error = b'{"error":{"message":"overloaded","type":"server_error"}}'
    async with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").respond(
            200, content=reads(sse(ROLE, TOKENS[0]), sse(TOKENS[1], error, TOKENS[2]))
        )
        with capture_logs() as logs:
            r = await gateway.post(
                "/v1/chat/completions", json={"model": "big", "messages": MSG, "stream": True}
            )
    events = client_events(r.text)
    assert "data: [DONE]" not in events
    # What was relayed before the failure is counted and charged, not recorded as free.
    (record,) = [e for e in logs if e["event"] == "request"]
    assert record["status"] >= 500 and record["output_tokens"] > 0 and record["cost_usd"] > 0
    assert events[:3] == client_events(sse(ROLE, TOKENS[0], TOKENS[1]).decode())
    assert orjson.loads(events[-1].removeprefix("data: "))["error"]["code"] == (
        "stream_interrupted"
    )
