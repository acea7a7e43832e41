"""Budget holds never outlive their request, and each request is charged exactly once,
whatever happens to the calls that hold and settle them.

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
from structlog.testing import capture_logs

from app.auth.config import ApiKey
from app.auth.guard import HOLD_GRACE_S, Guard
from app.auth.ledger import (
    _HOLD,
    _SETTLE,
    SETTLED_TTL_S,
    MemoryLedger,
    Periods,
    RedisLedger,
    to_nano,
)
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


@pytest.fixture
async def paused_guard(
    proxy: RedisProxy, redis_prefix: str
) -> AsyncIterator[tuple[Guard, list[float]]]:
    """A guard on the hot client behind the proxy whose retry pauses are recorded, not slept."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    hot = FastRedis(proxy.url, timeout_s=1.0)
    guard = Guard(RedisLedger(hot, redis_prefix), clock=lambda: NOON, sleep=sleep)
    try:
        yield guard, pauses
    finally:
        await guard.aclose(wait_s=1)
        await hot.aclose()


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


@pytest.mark.parametrize(
    ("failure", "charged_by"),
    [("lose", "this_retry"), ("cut", "an_earlier_attempt"), ("late", "an_earlier_attempt")],
)
async def test_a_settle_whose_reply_is_lost_is_charged_once_by_its_retry(
    app_client, shared, proxy, redis_prefix, failure, charged_by
) -> None:
    # lose: the settle never reached Redis; cut / late: Redis applied it, the reply never
    # came (connection dropped / after PARETO_REDIS_TIMEOUT_S). Either way the gateway
    # cannot tell, sends it again under the same settle id, and Redis charges it once.
    client, clock, app = await gateway(app_client, proxy.url, redis_prefix)
    proxy.on(SETTLE_SHA, failure)
    with capture_logs() as logs:
        assert (await chat(client)).status_code == 200  # settled after the last byte
        await app.state.guard.drain()  # the retry
    assert proxy.fired == [failure]
    assert await spend(app, clock.now) == (R, 0)  # charged once (not 0, not 2R), released
    retried = [e for e in logs if e["event"] == "limits_settle_retried"]
    assert len(retried) == 1 and retried[0]["charged"] is True
    assert retried[0]["charged_by"] == charged_by and retried[0]["api_key_name"] == "team"
    assert not [e for e in logs if e["event"] == "limits_settle_failed"]
    # The budget is one request: charged, it refuses the next.
    assert (await chat(client)).status_code == 402


async def test_a_settle_takes_one_round_trip_that_also_marks_it_applied(
    shared, proxy, redis_prefix
) -> None:
    # Exactly-once costs no extra command: the mark is written by the settle script itself.
    hot = FastRedis(proxy.url, timeout_s=1.0)
    guard = Guard(RedisLedger(hot, redis_prefix), clock=lambda: NOON)
    key = ApiKey(name="team", key_hash="x", daily_usd=REQUEST_USD)
    try:
        ticket = await guard.admit(key, {"messages": []})
        await ticket.hold(REQUEST_USD, deadline_s=900)
        before = len(proxy.sent)
        await ticket.settle(Record(request_id="r", cost_usd=REQUEST_USD))
        sent = proxy.sent[before:]
        assert len(sent) == 1 and SETTLE_SHA.encode() in sent[0]
        assert f"{redis_prefix}settled:".encode() in sent[0]
        marks = [k async for k in shared.scan_iter(match=redis_prefix + "settled:*")]
        assert len(marks) == 1
        assert 0 < await shared.pttl(marks[0]) <= SETTLED_TTL_S * 1000
        day, _ = await guard.ledger.spend("team", Periods.at(NOON))
        assert (day.spent, day.held) == (R, 0)
    finally:
        await guard.aclose(wait_s=1)
        await hot.aclose()


async def test_a_settle_that_never_gets_through_says_its_charge_is_unknown(
    shared, proxy, paused_guard: tuple[Guard, list[float]]
) -> None:
    guard, pauses = paused_guard
    key = ApiKey(name="team", key_hash="x", daily_usd=REQUEST_USD)
    ticket = await guard.admit(key, {"messages": []})
    await ticket.hold(REQUEST_USD, deadline_s=900)
    proxy.on(SETTLE_SHA, "lose", times=4)  # the settle and its three retries
    with capture_logs() as logs:
        await ticket.settle(Record(request_id="r", cost_usd=REQUEST_USD))
        await guard.drain()
    assert proxy.fired == ["lose"] * 4 and pauses == [1.0, 5.0]
    failed = [e for e in logs if e["event"] == "limits_settle_failed"]
    assert len(failed) == 1 and failed[0]["charged"] == "unknown"
    assert failed[0]["request_id"] == "r" and failed[0]["retries"] == 3
    day, _ = await guard.ledger.spend("team", Periods.at(NOON))
    assert (day.spent, day.held) == (0, R)  # held until the record expires


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


async def test_a_release_that_fails_is_retried_after_a_pause(
    shared, proxy, paused_guard: tuple[Guard, list[float]]
) -> None:
    guard, pauses = paused_guard
    key = ApiKey(name="team", key_hash="x", daily_usd=REQUEST_USD)
    ticket = await guard.admit(key, {"messages": []})
    proxy.on(HOLD_SHA, "cut")  # applied, then the connection drops
    proxy.on(SETTLE_SHA, "lose")  # the first release never reaches Redis
    with pytest.raises(LimitsUnavailableError):
        await ticket.hold(REQUEST_USD, deadline_s=900)
    await guard.drain()
    assert proxy.fired == ["cut", "lose"] and pauses == [1.0]
    day, _ = await guard.ledger.spend("team", Periods.at(NOON))
    assert (day.spent, day.held) == (0, 0)


async def test_a_free_request_holds_and_settles_without_a_settle_round_trip() -> None:
    # A zero estimate records nothing, so there is nothing to release afterwards.
    settles: list[tuple[str | None, str | None]] = []

    class Counting(MemoryLedger):
        async def settle(self, limits, hold_id, actual, extra_tokens, periods, now, **kw):
            settles.append((hold_id, kw.get("settle_id")))
            return await super().settle(limits, hold_id, actual, extra_tokens, periods, now, **kw)

    guard = Guard(Counting(), clock=lambda: NOON)
    ticket = await guard.admit(ApiKey(name="team", key_hash="x", daily_usd=1.0), {})
    await ticket.hold(0.0, deadline_s=900)
    await ticket.settle(Record(request_id="r"))
    assert settles == []
    paid = await guard.admit(ApiKey(name="team", key_hash="x", daily_usd=1.0), {})
    await paid.hold(0.001, deadline_s=900)
    await paid.settle(Record(request_id="r"))
    assert len(settles) == 1 and settles[0][0] is not None
    assert settles[0][1] == settles[0][0]  # the settle goes under the hold's id
    # Nothing held but something to charge: the settle still has an id (a fresh one).
    unheld = await guard.admit(ApiKey(name="team", key_hash="x", daily_usd=1.0), {})
    await unheld.hold(0.0, deadline_s=900)
    await unheld.settle(Record(request_id="r", cost_usd=0.001))
    assert settles[1][0] is None and settles[1][1] not in (None, settles[0][1])
