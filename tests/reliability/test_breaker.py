"""Circuit breaker transitions, driven by a manual clock — locally and through a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from app.reliability import BreakerConfig, Breakers, ManualClock

CONFIG = BreakerConfig(
    failures=3, error_rate=0.5, window_s=10, min_requests=6, open_s=5, probe_timeout_s=20
)
DEP = "m@p"


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def board(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[Callable[[ManualClock], Breakers]]:
    """A factory of breaker boards on one clock; 'redis' boards share state like replicas."""
    clients: list[aioredis.Redis] = []

    def make(clock: ManualClock) -> Breakers:
        if request.param == "local":
            return Breakers(CONFIG, clock=clock)
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        clients.append(client)
        return Breakers(CONFIG, redis=client, prefix=redis_prefix, clock=clock)

    yield make
    for client in clients:
        await client.aclose()


async def test_consecutive_failures_open_then_probe_then_close(board) -> None:
    clock = ManualClock()
    b = board(clock)
    for _ in range(2):
        assert await b.acquire(DEP)
        await b.failure(DEP)
    assert b.is_available(DEP)
    await b.failure(DEP)
    assert b.states()[DEP] == "open"
    assert not b.is_available(DEP) and DEP in b.unavailable()
    assert not await b.acquire(DEP)  # sheds traffic
    assert b.retry_in(DEP) == pytest.approx(5)

    clock.advance(5)
    assert b.is_available(DEP)
    assert await b.acquire(DEP)  # the half-open probe
    assert b.states()[DEP] == "half_open"
    assert not await b.acquire(DEP)  # one probe at a time
    await b.success(DEP)
    assert b.states()[DEP] == "closed"
    assert await b.acquire(DEP)
    assert b.opened_total == {(DEP, "consecutive_failures"): 1}


async def test_failed_probe_opens_again(board) -> None:
    clock = ManualClock()
    b = board(clock)
    await b.trip(DEP, "auth_failed")
    assert b.states()[DEP] == "open"
    clock.advance(5)
    assert await b.acquire(DEP)
    await b.failure(DEP)
    assert b.states()[DEP] == "open"
    assert not await b.acquire(DEP)
    clock.advance(4.9)
    assert not await b.acquire(DEP)
    clock.advance(0.2)
    assert await b.acquire(DEP)


async def test_released_probe_frees_the_slot(board) -> None:
    clock = ManualClock()
    b = board(clock)
    await b.trip(DEP, "auth_failed")
    clock.advance(5)
    assert await b.acquire(DEP)
    await b.release(DEP)  # the client went away mid-probe
    assert await b.acquire(DEP)


async def test_error_rate_over_window_opens(board) -> None:
    clock = ManualClock()
    b = board(clock)
    for ok in (True, False, True, False, True):  # never 3 failures in a row
        await (b.success if ok else b.failure)(DEP)
    assert b.states()[DEP] == "closed"
    await b.failure(DEP)  # 3 failures out of 6 calls: 50%
    assert b.states()[DEP] == "open"
    assert b.opened_total == {(DEP, "error_rate"): 1}


async def test_window_rolls_over(board) -> None:
    clock = ManualClock()
    b = board(clock)
    for ok in (True, False, True, False, True):
        await (b.success if ok else b.failure)(DEP)
    clock.advance(10)  # a new window: the old calls no longer count
    await b.failure(DEP)
    assert b.states()[DEP] == "closed"


@pytest.mark.redis
async def test_two_replicas_share_one_breaker(redis_prefix: str) -> None:
    clock = ManualClock()
    a_client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    b_client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    a = Breakers(CONFIG, redis=a_client, prefix=redis_prefix, clock=clock)
    b = Breakers(CONFIG, redis=b_client, prefix=redis_prefix, clock=clock)
    try:
        await a.failure(DEP)
        await b.failure(DEP)
        await a.failure(DEP)  # the third consecutive failure, counted across replicas
        assert a.states()[DEP] == "open"
        assert not await b.acquire(DEP)  # b sheds traffic it never saw fail
        clock.advance(5)
        assert await b.acquire(DEP)  # b takes the probe...
        assert not await a.acquire(DEP)  # ...so a may not
        await b.success(DEP)
        assert await a.acquire(DEP) and a.states()[DEP] == "closed"
        assert not a.redis_degraded and a.shared
    finally:
        await a_client.aclose()
        await b_client.aclose()


@pytest.mark.redis
async def test_healthy_breaker_costs_no_round_trip_and_flushes_successes(
    redis_prefix: str,
) -> None:
    clock = ManualClock()
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    board = Breakers(CONFIG, redis=client, prefix=redis_prefix, clock=clock, sync_s=1.0)
    calls: list[str] = []
    script = board._script

    async def counting(*, keys: list[str], args: list[str]) -> object:
        calls.append(args[0])
        return await script(keys=keys, args=args)

    board._script = counting
    try:
        assert await board.acquire(DEP)  # first sight: asks Redis
        await board.success(DEP)
        for _ in range(50):
            assert await board.acquire(DEP)
            await board.success(DEP)
        assert calls == ["acquire"]  # 50 healthy calls, no round trip
        clock.advance(1.5)
        assert await board.acquire(DEP)  # stale copy: re-synced, carrying the successes
        assert calls == ["acquire", "acquire"]
        stored = await client.hget(redis_prefix + "breaker:" + DEP, "window_total")
        assert int(stored) == 51
        await board.failure(DEP)  # failures always go to Redis at once
        assert calls[-1] == "failure"
        assert await board.acquire(DEP) and calls[-1] == "acquire"  # failure in view: exact
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_opening_through_redis_is_reported_with_the_wall_clock(redis_prefix: str) -> None:
    """Lua returns opened_at rounded to 14 digits; a real timestamp must still count."""
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    opened: list[tuple[str, str]] = []
    board = Breakers(
        CONFIG, redis=client, prefix=redis_prefix, on_trip=lambda d, c: opened.append((d, c))
    )
    try:
        await board.trip(DEP, "auth_failed")
        for _ in range(CONFIG.failures):
            await board.failure("other@p")
        assert opened == [(DEP, "auth_failed"), ("other@p", "consecutive_failures")]
        assert board.opened_total[(DEP, "auth_failed")] == 1
    finally:
        await client.aclose()


async def test_success_nowait_counts_locally_and_defers_a_reset(board) -> None:
    # The healthy path is counted with no I/O, so a finished stream needs no cancel shield
    # for it. Locally every success is; shared through Redis, a failure streak to reset
    # needs the round trip (success_nowait says no, success does it).
    clock = ManualClock()
    b = board(clock)
    assert await b.acquire(DEP)
    await b.failure(DEP)
    if b._redis is None:
        assert b.success_nowait(DEP)
    else:
        assert not b.success_nowait(DEP)
        await b.success(DEP)
    assert b._states[DEP].consecutive == 0  # the streak is reset either way
    assert b.success_nowait(DEP)  # and the next success costs nothing
