"""Budget holds never outlive their request, whatever happens to the calls that hold them.

A key whose budget is exactly one request: a hold that leaked would answer the next request
402 "fully reserved" although nothing was spent. The gateway talks to the shared Redis
through :class:`~tests.support.redis_proxy.RedisProxy`, which fails the hold or the settle
script the way a network does (applied but answered late, applied then cut, lost), or cuts
the worker off for good (as if it had died between hold and settle).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.auth.config import ApiKey
from app.auth.guard import HOLD_GRACE_S, Guard
from app.auth.ledger import _HOLD, _SETTLE, MemoryLedger, Periods, RedisLedger, to_nano
from app.errors import LimitsUnavailableError
from app.fastredis import FastRedis
from app.telemetry.record import Record
from tests.auth.test_limits_api import NOON, REQUEST_USD, chat, keyed_client, keyed_config
from tests.support.redis_proxy import RedisProxy

pytestmark = pytest.mark.redis

REDIS = "redis://127.0.0.1:6379/0"
HOLD_SHA = hashlib.sha1(_HOLD.encode()).hexdigest()
SETTLE_SHA = hashlib.sha1(_SETTLE.encode()).hexdigest()
R = to_nano(REQUEST_USD)


@pytest.fixture
async def shared(prefixed_redis: aioredis.Redis) -> aioredis.Redis:
    # Loaded up front: the proxy spots the scripts by the SHA1 that EVALSHA sends.
    await prefixed_redis.script_load(_HOLD)
    await prefixed_redis.script_load(_SETTLE)
    return prefixed_redis


@pytest.fixture
async def proxy() -> AsyncIterator[RedisProxy]:
    async with RedisProxy(late_s=0.5) as p:
        yield p


async def gateway(app_client, url: str, prefix: str) -> tuple[Any, Any, Any]:
    """An in-process gateway with a one-request daily budget, counting in Redis at ``url``."""
    return await keyed_client(
        app_client,
        keyed_config(budget={"daily_usd": REQUEST_USD}),
        redis_url=url,
        redis_timeout_s=0.2,
        auth_key_prefix=prefix + "auth:",
        session_key_prefix=prefix + "session:",
        feedback_key_prefix=prefix + "feedback:",
        breaker_redis_prefix=prefix,
    )


async def spend(app: Any, now: float) -> tuple[int, int]:
    day, _ = await app.state.guard.ledger.spend("team", Periods.at(now))
    return day.spent, day.held


async def until_released(app: Any, now: float) -> tuple[int, int] | None:
    """The day's (spent, held) once nothing is held (None if something still is after 3 s)."""
    for _ in range(60):
        try:
            state = await spend(app, now)
        except RedisError:  # behind a reply the proxy holds back
            state = None
        if state is not None and state[1] == 0:
            return state
        await asyncio.sleep(0.05)
    return None


@pytest.mark.parametrize("failure", ["late", "cut"])
async def test_a_hold_applied_but_never_answered_is_released(
    app_client, shared, proxy, redis_prefix, failure
) -> None:
    client, clock, app = await gateway(app_client, proxy.url, redis_prefix)
    proxy.on(HOLD_SHA, failure)
    r = await chat(client)
    assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable"
    assert proxy.fired == [failure]
    # Redis applied it; the gateway could not know, and released it by its id.
    assert await until_released(app, clock.now) == (0, 0)
    assert (await chat(client)).status_code == 200
    assert await spend(app, clock.now) == (R, 0)


async def test_a_settle_lost_on_the_way_releases_the_hold(
    app_client, shared, proxy, redis_prefix
) -> None:
    client, clock, app = await gateway(app_client, proxy.url, redis_prefix)
    proxy.on(SETTLE_SHA, "lose")
    assert (await chat(client)).status_code == 200  # settled after the last byte: lost
    assert proxy.fired == ["lose"]
    # The hold is released by id (idempotent); the cost is not charged again blindly
    # (a settle retried after it was applied would charge it twice).
    assert await until_released(app, clock.now) == (0, 0)
    assert (await chat(client)).status_code == 200


async def test_a_settle_answered_late_releases_nothing_twice(
    app_client, shared, proxy, redis_prefix
) -> None:
    client, clock, app = await gateway(app_client, proxy.url, redis_prefix)
    proxy.on(SETTLE_SHA, "late")
    assert (await chat(client)).status_code == 200
    await app.state.guard.drain()  # the release by id after the settle "failed"
    assert await spend(app, clock.now) == (R, 0)  # not (R, -R)
    assert (await chat(client)).status_code == 402


async def test_a_hold_whose_worker_died_stops_counting_after_the_deadline_and_grace(
    app_client, shared, proxy, redis_prefix
) -> None:
    # Worker A holds, serves, and is cut off from Redis for good before it can settle.
    a, _, _ = await gateway(app_client, proxy.url, redis_prefix)
    proxy.on(HOLD_SHA, "freeze")
    assert (await chat(a)).status_code == 200
    # Worker B (same Redis, same key) sees the hold while A's request could still run.
    b, clock, app = await gateway(app_client, REDIS, redis_prefix)
    deadline = app.state.gateway.settings.request_timeout_s
    clock.now = NOON + deadline
    r = await chat(b)
    assert r.status_code == 402 and "fully reserved" in r.json()["error"]["message"]
    clock.now = NOON + deadline + HOLD_GRACE_S + 1
    assert (await chat(b)).status_code == 200  # the dead hold was swept by this one's hold
    assert await spend(app, clock.now) == (R, 0)


async def test_a_hold_cancelled_in_flight_is_released_by_the_settle(
    shared, proxy, redis_prefix
) -> None:
    # The client went away (or a cascade tier timed out) while the hold was on its way.
    hot = FastRedis(proxy.url, timeout_s=1.0)
    guard = Guard(RedisLedger(hot, redis_prefix), clock=lambda: NOON)
    key = ApiKey(name="team", key_hash="x", daily_usd=REQUEST_USD)
    try:
        ticket = await guard.admit(key, {"messages": []})
        proxy.on(HOLD_SHA, "late")
        holding = asyncio.ensure_future(ticket.hold(REQUEST_USD, deadline_s=900))
        await asyncio.sleep(0.1)  # applied in Redis, its reply held back by the proxy
        holding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holding
        await ticket.settle(Record(request_id="r"))
        await asyncio.sleep(0.6)  # the late replies have come and gone
        day, _ = await guard.ledger.spend("team", Periods.at(NOON))
        assert (day.spent, day.held) == (0, 0)
    finally:
        await guard.aclose(wait_s=1)
        await hot.aclose()


async def test_a_release_that_fails_is_retried_after_a_pause(shared, proxy, redis_prefix) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    hot = FastRedis(proxy.url, timeout_s=1.0)
    guard = Guard(RedisLedger(hot, redis_prefix), clock=lambda: NOON, sleep=sleep)
    key = ApiKey(name="team", key_hash="x", daily_usd=REQUEST_USD)
    try:
        ticket = await guard.admit(key, {"messages": []})
        proxy.on(HOLD_SHA, "cut")  # applied, then the connection drops
        proxy.on(SETTLE_SHA, "lose")  # the first release never reaches Redis
        with pytest.raises(LimitsUnavailableError):
            await ticket.hold(REQUEST_USD, deadline_s=900)
        await guard.drain()
        assert proxy.fired == ["cut", "lose"] and pauses == [1.0]
        day, _ = await guard.ledger.spend("team", Periods.at(NOON))
        assert (day.spent, day.held) == (0, 0)
    finally:
        await guard.aclose(wait_s=1)
        await hot.aclose()


async def test_a_free_request_holds_and_settles_without_a_settle_round_trip() -> None:
    # A zero estimate records nothing, so there is nothing to release afterwards.
    settles: list[str | None] = []

    class Counting(MemoryLedger):
        async def settle(self, limits, hold_id, actual, extra_tokens, periods, now) -> None:
            settles.append(hold_id)
            await super().settle(limits, hold_id, actual, extra_tokens, periods, now)

    guard = Guard(Counting(), clock=lambda: NOON)
    ticket = await guard.admit(ApiKey(name="team", key_hash="x", daily_usd=1.0), {})
    await ticket.hold(0.0, deadline_s=900)
    await ticket.settle(Record(request_id="r"))
    assert settles == []
    paid = await guard.admit(ApiKey(name="team", key_hash="x", daily_usd=1.0), {})
    await paid.hold(0.001, deadline_s=900)
    await paid.settle(Record(request_id="r"))
    assert len(settles) == 1 and settles[0] is not None
