"""The counters behind limits and budgets, in memory and in Redis, driven by explicit time."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.auth.ledger import (
    SETTLED_TTL_S,
    SWEEP_BATCH,
    BudgetVerdict,
    Ledger,
    Limits,
    MemoryLedger,
    Periods,
    RedisLedger,
)
from app.fastredis import FastRedis

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC).timestamp()


TTL = 960.0  # a hold record's life in most tests: far longer than any test runs


def limits(rpm=None, tpm=None, daily=None, monthly=None, name="k") -> Limits:
    return Limits(name, rpm, tpm, daily, monthly)


async def hold(ledger, lim, amount, hold_id, now=T0, ttl_s=TTL) -> BudgetVerdict:
    return await ledger.hold(lim, amount, Periods.at(now), now, hold_id=hold_id, ttl_s=ttl_s)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def ledger(request, redis_prefix) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    hot = FastRedis("redis://127.0.0.1:6379/0", timeout_s=1.0)
    try:
        yield RedisLedger(hot, redis_prefix)
    finally:
        await hot.aclose()
        keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_requests_per_minute_allows_a_burst_then_one_per_interval(ledger) -> None:
    lim = limits(rpm=3)
    assert all([(await ledger.admit(lim, 1, T0)).ok for _ in range(3)])
    refused = await ledger.admit(lim, 1, T0)
    assert not refused.ok and refused.limit == "requests_per_minute"
    assert refused.retry_after_s == pytest.approx(20.0)
    assert not (await ledger.admit(lim, 1, T0 + 19.9)).ok
    assert (await ledger.admit(lim, 1, T0 + 20.0)).ok
    assert not (await ledger.admit(lim, 1, T0 + 20.0)).ok
    # A minute later the whole burst is back.
    assert all([(await ledger.admit(lim, 1, T0 + 80.0)).ok for _ in range(3)])


async def test_keys_are_counted_apart(ledger) -> None:
    a, b = limits(rpm=1, name="a"), limits(rpm=1, name="b")
    assert (await ledger.admit(a, 1, T0)).ok and (await ledger.admit(b, 1, T0)).ok
    assert not (await ledger.admit(a, 1, T0)).ok


async def test_tokens_per_minute_and_actual_tokens_settled_later(ledger) -> None:
    lim = limits(tpm=100)
    p = Periods.at(T0)
    assert (await ledger.admit(lim, 40, T0)).ok
    assert (await ledger.admit(lim, 40, T0)).ok
    refused = await ledger.admit(lim, 40, T0)
    assert not refused.ok and refused.limit == "tokens_per_minute"
    assert refused.retry_after_s == pytest.approx(12.0)
    # The first two turned out to use 30 tokens fewer in all: refunded, the third fits.
    await ledger.settle(lim, None, 0, -30, p, T0)
    assert (await ledger.admit(lim, 40, T0)).ok
    # TAT is now T0+54; a request that used 100 tokens (60 s) more than estimated puts the
    # key in debt until T0+114, so a 1-token request fits only from T0+54.6 on.
    await ledger.settle(lim, None, 0, 100, p, T0)
    assert not (await ledger.admit(lim, 1, T0 + 54.5)).ok
    assert (await ledger.admit(lim, 1, T0 + 54.7)).ok


async def test_a_refused_check_charges_nothing(ledger) -> None:
    lim = limits(rpm=10, tpm=50)
    assert (await ledger.admit(lim, 50, T0)).ok
    for _ in range(5):  # refused on tokens: the request counter must not move
        assert not (await ledger.admit(lim, 10, T0)).ok
    assert (await ledger.admit(limits(rpm=10, tpm=50), 0, T0)).ok


async def test_budget_holds_until_spent_plus_held_reaches_the_limit(ledger) -> None:
    lim = limits(daily=100)
    p = Periods.at(T0)
    ttl = 2 * 86400  # these holds still count tomorrow (their requests run past midnight)
    assert (await hold(ledger, lim, 60, "a", ttl_s=ttl)).ok
    assert (await hold(ledger, lim, 30, "b", ttl_s=ttl)).ok  # 90 < 100: admitted
    assert (await hold(ledger, lim, 30, "c", ttl_s=ttl)).ok  # 90 < 100: admitted, ends at 120
    refused = await hold(ledger, lim, 1, "d", ttl_s=ttl)
    assert not refused.ok and refused.period == "daily"
    assert (refused.spend.spent, refused.spend.held) == (0, 120)
    # Actual costs replace the holds.
    await ledger.settle(lim, "a", 10, 0, p, T0)
    await ledger.settle(lim, "b", 0, 0, p, T0)  # failed request: hold released, nothing spent
    day, month = await ledger.spend("k", p)
    assert (day.spent, day.held) == (10, 30) and (month.spent, month.held) == (10, 30)
    assert (await hold(ledger, lim, 50, "e", ttl_s=ttl)).ok
    # Tomorrow is a new day; the month goes on.
    tomorrow = T0 + 86400
    monthly = limits(daily=100, monthly=90)  # month: 10 spent + 80 held
    verdict = await hold(ledger, monthly, 1, "f", now=tomorrow, ttl_s=ttl)
    assert not verdict.ok and verdict.period == "monthly"
    assert (await hold(ledger, limits(daily=100), 1, "g", now=tomorrow, ttl_s=ttl)).ok


async def test_admit_reports_budget_state_for_budget_aware_routing(ledger) -> None:
    lim = limits(daily=1000)
    p = Periods.at(T0)
    await hold(ledger, lim, 300, "a")
    await ledger.settle(lim, "a", 250, 0, p, T0)
    verdict = await ledger.admit(lim, 1, T0)
    assert verdict.ok and verdict.day.spent == 250 and verdict.month.spent == 250


def test_periods_reset_at_utc_midnight_and_month_start() -> None:
    p = Periods.at(dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.UTC).timestamp())
    assert (p.day, p.month) == ("20261231", "202612")
    assert p.day_reset_s == pytest.approx(3600) and p.month_reset_s == pytest.approx(3600)
    p = Periods.at(dt.datetime(2026, 2, 10, 0, 0, tzinfo=dt.UTC).timestamp())
    assert p.month_reset_s == pytest.approx(19 * 86400)


async def test_settle_with_nothing_held_on_a_budget_key(ledger) -> None:
    # A request refused or failed before its hold: nothing held, tokens to refund. The Redis
    # script once sent "HINCRBY held -0" here, which Redis refuses, losing the refund.
    lim = limits(daily=100, tpm=100)
    p = Periods.at(T0)
    assert (await ledger.admit(lim, 80, T0)).ok
    await ledger.settle(lim, None, 0, -80, p, T0)  # must not raise
    assert (await ledger.admit(lim, 80, T0)).ok  # the refund went through
    await ledger.settle(lim, None, 7, 0, p, T0)  # spent with no hold (a cascade judge, say)
    day, _ = await ledger.spend("k", p)
    assert (day.spent, day.held) == (7, 0)


async def test_settle_releases_what_the_record_holds_and_only_once(ledger) -> None:
    lim = limits(daily=1000)
    p = Periods.at(T0)
    assert (await hold(ledger, lim, 60, "a")).ok
    assert (await hold(ledger, lim, 30, "b")).ok
    await ledger.settle(lim, "a", 50, 0, p, T0)
    # Settled again (a release racing the settle, say), and a hold that never arrived:
    # neither releases anything, so held never drops below what is really in flight.
    await ledger.settle(lim, "a", 0, 0, p, T0)
    await ledger.settle(lim, "never-held", 0, 0, p, T0)
    day, month = await ledger.spend("k", p)
    assert (day.spent, day.held) == (50, 30) and (month.spent, month.held) == (50, 30)
    # A refused hold records nothing: its settle releases nothing either.
    assert not (await hold(ledger, limits(daily=80), 5, "refused")).ok
    await ledger.settle(lim, "refused", 0, 0, p, T0)
    await ledger.settle(lim, "b", 0, 0, p, T0)
    day, _ = await ledger.spend("k", p)
    assert (day.spent, day.held) == (50, 0)


async def test_a_settle_sent_twice_under_one_id_is_applied_once(ledger) -> None:
    # Its first reply was lost, so the gateway sent it again: the charge, the release and
    # the token correction happen once, and the second call says it applied nothing.
    lim = limits(daily=1000, tpm=100)
    p = Periods.at(T0)
    assert (await ledger.admit(lim, 20, T0)).ok
    assert (await hold(ledger, lim, 60, "a")).ok
    assert (await hold(ledger, lim, 30, "b")).ok
    assert await ledger.settle(lim, "a", 50, 40, p, T0, settle_id="a") is True
    assert await ledger.settle(lim, "a", 50, 40, p, T0 + 1, settle_id="a") is False
    day, month = await ledger.spend("k", p)
    assert (day.spent, day.held) == (50, 30) and (month.spent, month.held) == (50, 30)
    # 20 + 40 tokens used of 100: 40 more pass now, 41 would not (80 once charged twice).
    assert not (await ledger.admit(lim, 41, T0)).ok
    assert (await ledger.admit(lim, 40, T0)).ok
    # A settle with nothing held has an id of its own; other ids are applied as usual.
    assert await ledger.settle(lim, None, 7, 0, p, T0, settle_id="c") is True
    assert await ledger.settle(lim, None, 7, 0, p, T0, settle_id="c") is False
    assert await ledger.settle(lim, "b", 20, 0, p, T0, settle_id="b") is True
    day, _ = await ledger.spend("k", p)
    assert (day.spent, day.held) == (77, 0)


async def test_a_settle_id_is_forgotten_after_its_mark_expires() -> None:
    # In memory (Redis expires the mark on its own clock): the marks do not pile up.
    ledger = MemoryLedger()
    lim = limits(daily=1000)
    p = Periods.at(T0)
    assert await ledger.settle(lim, None, 5, 0, p, T0, settle_id="x")
    assert not await ledger.settle(lim, None, 5, 0, p, T0 + SETTLED_TTL_S - 1, settle_id="x")
    assert await ledger.settle(lim, None, 5, 0, p, T0 + SETTLED_TTL_S + 1, settle_id="y")
    assert ledger._settled == {"y": T0 + 2 * SETTLED_TTL_S + 1}  # "x" swept


async def test_holds_of_one_request_add_up_and_keep_the_latest_expiry(ledger) -> None:
    lim = limits(daily=1000)
    p = Periods.at(T0)
    await hold(ledger, lim, 10, "cascade", ttl_s=5)  # a cheap tier
    await hold(ledger, lim, 20, "cascade", now=T0 + 1, ttl_s=100)  # the last tier
    await hold(ledger, lim, 1, "other", now=T0 + 10)  # sweeps what expired by now: nothing
    day, _ = await ledger.spend("k", p)
    assert day.held == 31
    await ledger.settle(lim, "cascade", 25, 0, p, T0 + 20)  # both tiers' holds at once
    day, _ = await ledger.spend("k", p)
    assert (day.spent, day.held) == (25, 1)


async def test_a_hold_nobody_settles_stops_counting_at_its_expiry(ledger) -> None:
    # Its worker died between hold and settle: nothing will ever release it.
    lim = limits(daily=100, monthly=1000)
    p = Periods.at(T0)
    assert (await hold(ledger, lim, 100, "dead", ttl_s=5)).ok
    refused = await hold(ledger, lim, 1, "x", now=T0 + 4.9)  # may still be in flight
    assert not refused.ok and refused.spend.held == 100
    assert (await hold(ledger, lim, 1, "y", now=T0 + 5.1)).ok  # expired: swept first
    day, month = await ledger.spend("k", p)
    assert day.held == 1 and month.held == 1
    # Its request was alive after all and settles late: charged, nothing released twice.
    await ledger.settle(lim, "dead", 90, 0, p, T0 + 6)
    day, month = await ledger.spend("k", p)
    assert (day.spent, day.held) == (90, 1) and (month.spent, month.held) == (90, 1)


async def test_a_backlog_of_expired_holds_is_swept_by_the_holds_that_follow(ledger) -> None:
    # A worker died with more requests in flight than one hold sweeps (SWEEP_BATCH).
    lim = limits(daily=10**6)
    p = Periods.at(T0)
    for i in range(SWEEP_BATCH + 36):
        assert (await hold(ledger, lim, 1000, f"dead-{i}", ttl_s=5)).ok
    assert (await hold(ledger, lim, 7, "a", now=T0 + 10)).ok
    assert (await hold(ledger, lim, 7, "b", now=T0 + 10)).ok
    day, month = await ledger.spend("k", p)
    assert day.held == 14 and month.held == 14


async def test_concurrent_holds_are_admitted_exactly_up_to_the_budget(ledger) -> None:
    lim = limits(daily=100)
    p = Periods.at(T0)
    verdicts = await asyncio.gather(*(hold(ledger, lim, 10, f"r{i}") for i in range(40)))
    assert [v.ok for v in verdicts].count(True) == 10  # admitted while spent + held < 100
    await asyncio.gather(
        *(ledger.settle(lim, f"r{i}", 10, 0, p, T0) for i, v in enumerate(verdicts) if v.ok)
    )
    day, _ = await ledger.spend("k", p)
    assert (day.spent, day.held) == (100, 0)
