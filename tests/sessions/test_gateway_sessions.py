"""Session stickiness through the in-process gateway: headers, records, and what Redis holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import small_config

SYSTEM = {"role": "system", "content": "You are a travel agent."}


async def chat(
    client: httpx.AsyncClient, messages: list[dict[str, Any]], **extra: Any
) -> httpx.Response:
    r = await client.post(
        "/v1/chat/completions", json={"model": "small", "messages": messages, **extra}
    )
    assert r.status_code == 200, r.text
    return r


async def two_turns(client: httpx.AsyncClient, **extra: Any) -> list[httpx.Response]:
    messages = [SYSTEM, {"role": "user", "content": "Plan three days in Porto"}]
    first = await chat(client, messages, **extra)
    messages += [
        {"role": "assistant", "content": "Day 1: Ribeira. Day 2: Foz. Day 3: port cellars."},
        {"role": "user", "content": "Add a day trip"},
    ]
    return [first, await chat(client, messages, **extra)]


async def test_second_turn_is_sticky(app_client) -> None:
    client = await app_client()
    first, second = await two_turns(client)
    assert first.headers["x-pareto-session"] == "new"
    assert second.headers["x-pareto-session"] == "sticky"
    assert second.headers["x-pareto-deployment"] == first.headers["x-pareto-deployment"]


async def test_stream_turns_are_sticky_too(app_client) -> None:
    client = await app_client()
    _, second = await two_turns(client, stream=True)
    assert second.headers["x-pareto-session"] == "sticky"


async def test_switch_off_records_no_session(app_client) -> None:
    client = await app_client(sessions_enabled=False)
    _, second = await two_turns(client)
    assert "x-pareto-session" not in second.headers


async def test_history_without_a_session_entry_is_recorded_as_expired(app_client) -> None:
    client = await app_client()
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What did I say?"},
    ]
    r = await chat(client, messages)
    assert r.headers["x-pareto-session"] == "switched:expired"


async def test_bad_session_id_is_an_openai_400(app_client) -> None:
    client = await app_client()
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": [SYSTEM], "pareto": {"session_id": 5}},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "pareto.session_id"


@pytest.fixture
async def shared_redis(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    yield redis
    keys = [k async for k in redis.scan_iter(match=redis_prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.mark.redis
async def test_redis_holds_one_hashed_key_and_no_prompt_text(
    app_client, shared_redis: aioredis.Redis, redis_prefix: str
) -> None:
    client = await app_client(
        small_config(), redis_url="redis://127.0.0.1:6379/0", session_key_prefix=redis_prefix
    )
    first, second = await two_turns(client, user="traveller-7")
    assert second.headers["x-pareto-session"] == "sticky"
    keys = [k async for k in shared_redis.scan_iter(match=redis_prefix + "*")]
    assert len(keys) == 1
    value = await shared_redis.get(keys[0])
    assert value is not None
    stored = keys[0] + value
    for secret in (b"Porto", b"travel", b"traveller-7"):
        assert secret not in stored
    assert first.headers["x-pareto-deployment"].encode() in value
    assert 0 < await shared_redis.ttl(keys[0]) <= 600


@pytest.mark.redis
async def test_idle_past_the_ttl_the_next_turn_is_recorded_as_expired(
    app_client, shared_redis: aioredis.Redis, redis_prefix: str
) -> None:
    client = await app_client(
        small_config(),
        redis_url="redis://127.0.0.1:6379/0",
        session_key_prefix=redis_prefix,
        session_ttl_s=0.2,
    )
    first, _ = await two_turns(client)
    assert first.headers["x-pareto-session"] == "new"
    await asyncio.sleep(0.3)  # Redis drops the key after its 200 ms TTL
    messages = [
        SYSTEM,
        {"role": "user", "content": "Plan three days in Porto"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "And a fourth?"},
    ]
    late = await chat(client, messages)
    assert late.headers["x-pareto-session"] == "switched:expired"
