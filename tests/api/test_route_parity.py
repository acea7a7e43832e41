"""``POST /v1/route`` decides with chat's inputs (session, budget pressure), without their
side effects: the session's TTL, the key's spend and holds, and its rate limits stay as
they were. Redis-backed, as in production with more than one replica."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.auth.config import generate_key, hash_key
from app.auth.guard import limits_of
from app.auth.ledger import Periods, to_nano
from tests.conftest import sim_deployment, small_config

REDIS = "redis://127.0.0.1:6379/0"
KEY = generate_key()
AUTH = {"authorization": f"Bearer {KEY}"}
SESSION = {"x-pareto-session-id": "trip-planning-42"}
# About 2,000 prompt tokens before the assistant's answer: the cache a sticky turn reuses.
BRIEF = "Plan a week in Portugal for a family of four. " * 180
FIRST_TURN = [{"role": "user", "content": BRIEF}]
NEXT_TURN = [
    *FIRST_TURN,
    {"role": "assistant", "content": "Day 1: Lisbon. Day 2: Sintra. Day 3: Porto."},
    {"role": "user", "content": "Add a beach day."},
]
# Turn 1 weighs latency (the fast, dearer deployment serves it); turn 2 weighs only cost.
LATENCY_FIRST = {"x-pareto-lambda-latency": "1000", "x-pareto-lambda-cost": "0"}
COST_ONLY = {"x-pareto-lambda-latency": "0", "x-pareto-lambda-cost": "1000000"}


def two_speed_config() -> dict[str, Any]:
    """One model at a cheap slow provider and a fast one at three times the price."""
    config = small_config()
    config["models"] = {"small": config["models"]["small"]}
    config["deployments"] = {
        "small@slow": sim_deployment(price_in=0.1, price_out=0.2, ttft_s=0.5),
        "small@fast": sim_deployment(price_in=0.3, price_out=0.6, ttft_s=0.01),
    }
    return config


async def chat(
    client: httpx.AsyncClient, messages: list[dict[str, Any]], headers: dict[str, str]
) -> httpx.Response:
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": messages, "max_tokens": 16},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r


async def route(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    r = await client.post("/v1/route", json=body, headers=headers)
    assert r.status_code == 200, r.text
    explained: dict[str, Any] = r.json()
    return explained


async def snapshot(redis: aioredis.Redis, prefix: str) -> dict[bytes, tuple[Any, int]]:
    """Every key under ``prefix``: its value (strings and hashes) and its TTL in ms."""
    out: dict[bytes, tuple[Any, int]] = {}
    async for key in redis.scan_iter(match=prefix + "*"):
        kind = await redis.type(key)
        value = await (redis.hgetall(key) if kind == b"hash" else redis.get(key))
        out[key] = (value, await redis.pttl(key))
    return out


@pytest.mark.redis
async def test_route_names_the_sessions_deployment_like_the_next_chat_turn(
    app_client, prefixed_redis: aioredis.Redis, redis_prefix: str
) -> None:
    client = await app_client(two_speed_config(), redis_url=REDIS, session_key_prefix=redis_prefix)
    first = await chat(client, FIRST_TURN, {**SESSION, **LATENCY_FIRST})
    assert first.headers["x-pareto-deployment"] == "small@fast"
    next_turn = {"model": "small", "messages": NEXT_TURN, "max_tokens": 16}

    # Without the session the cheap deployment wins the next turn's body...
    cold = await route(client, next_turn, COST_ONLY)
    assert cold["plan"][0]["deployment"] == "small@slow"
    # ...with it, the conversation's warm cache keeps it where it was served.
    explained = await route(client, next_turn, {**SESSION, **COST_ONLY})
    assert explained["plan"][0]["deployment"] == "small@fast"
    assert cold["session"] is None
    session = explained["session"]
    assert session["deployment"] == "small@fast" and session["kept"] is True
    assert session["switch_reason"] is None and session["cache_value"] > 0
    rows = {row["deployment"]: row for row in explained["candidates"]}
    assert rows["small@fast"]["sticky"] is True and "sticky" not in rows["small@slow"]
    # The warm row is priced with the cached prefix: cheaper than the cold dry run said.
    cold_rows = {row["deployment"]: row for row in cold["candidates"]}
    assert rows["small@fast"]["est_cost_usd"] < cold_rows["small@fast"]["est_cost_usd"]

    second = await chat(client, NEXT_TURN, {**SESSION, **COST_ONLY})
    assert second.headers["x-pareto-session"] == "sticky"
    assert second.headers["x-pareto-deployment"] == explained["plan"][0]["deployment"]


@pytest.mark.redis
async def test_route_leaves_the_session_ttl_alone(
    app_client, prefixed_redis: aioredis.Redis, redis_prefix: str
) -> None:
    client = await app_client(two_speed_config(), redis_url=REDIS, session_key_prefix=redis_prefix)
    await chat(client, FIRST_TURN, SESSION)
    [key] = [k async for k in prefixed_redis.scan_iter(match=redis_prefix + "*")]
    await prefixed_redis.pexpire(key, 300_000)  # half the TTL a served turn would set
    before = await prefixed_redis.get(key)

    explained = await route(client, {"model": "small", "messages": NEXT_TURN}, SESSION)

    assert await prefixed_redis.get(key) == before
    assert 0 < await prefixed_redis.pttl(key) <= 300_000  # not renewed to the full 600 s
    assert explained["session"]["deployment"] == "small@slow"  # it was read, though


def pressured_config(**key: Any) -> dict[str, Any]:
    """A key with a $1 daily budget and a policy that turns cheaper as it is spent."""
    config = small_config()
    for dep in config["deployments"].values():
        dep["simulation"]["prefix_cache"] = False
    config["auth"] = {"keys": {"team": {"hash": hash_key(KEY), **key}}}
    config["policies"] = {
        "careful": {
            "description": "quality first, until the key's budget runs low",
            "lambda_cost": 1000,
            "budget_pressure": {"start": 0.5, "max_factor": 1000},
        }
    }
    return config


@pytest.mark.redis
async def test_route_feels_the_budget_pressure_chat_feels(
    app_client, prefixed_redis: aioredis.Redis, redis_prefix: str
) -> None:
    client = await app_client(
        pressured_config(budget={"daily_usd": 1.0}, rate_limit={"requests_per_minute": 2}),
        redis_url=REDIS,
        auth_key_prefix=redis_prefix,
        session_key_prefix=redis_prefix + "session:",
    )
    app = client._transport.app
    guard = app.state.guard
    body = {"model": "careful", "messages": [{"role": "user", "content": "Say hello"}]}
    relaxed = await route(client, body, AUTH)
    assert relaxed["plan"][0]["deployment"] == "big@sim"  # budget untouched: quality wins

    # Earlier requests of this key spent $0.90 of its $1 budget today.
    key = app.state.gateway.catalog.auth.by_name["team"]
    now = guard.clock()
    await guard.ledger.settle(limits_of(key), None, to_nano(0.9), 0, Periods.at(now), now)
    before = await snapshot(prefixed_redis, redis_prefix)
    pressed = await route(client, body, AUTH)
    after = await snapshot(prefixed_redis, redis_prefix)

    assert pressed["plan"][0]["deployment"] == "small@sim"
    # 90 % used: λ_cost x (1 + 999 x 0.8), exactly as chat's admission would compute it.
    assert relaxed["policy"]["budget_factor"] == 1.0
    assert pressed["policy"]["budget_factor"] == pytest.approx(800.2)
    assert pressed["policy"]["lambda_cost"] == pytest.approx(1000 * 800.2)
    # Nothing held, spent or charged: the same keys, values, and no TTL renewed.
    assert {k: v for k, (v, _) in after.items()} == {k: v for k, (v, _) in before.items()}
    assert all(after[k][1] <= before[k][1] for k in after)
    day, month = await guard.ledger.spend(key.name, Periods.at(guard.clock()))
    assert (day.spent, day.held) == (to_nano(0.9), 0)

    served = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert served.status_code == 200, served.text
    assert served.headers["x-pareto-deployment"] == pressed["plan"][0]["deployment"]
    # Two dry runs charged no request to the 2-a-minute limit: chat still has one left.
    assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 429


async def test_route_answers_503_when_the_budget_cannot_be_read(app_client) -> None:
    from tests.support.procs import free_port

    client = await app_client(
        pressured_config(budget={"daily_usd": 1.0}),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    body = {"model": "careful", "messages": [{"role": "user", "content": "Say hello"}]}
    r = await client.post("/v1/route", json=body, headers=AUTH)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "limits_unavailable"
