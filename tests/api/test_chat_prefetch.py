"""The session lookup that rides with the rate-limit check (``Gateway.prefetch_session``).

``ChatEndpoint`` starts the Redis session lookup before the key's rate-limit check, so both
commands leave in one write and share one round trip; ``handle_chat`` then uses that lookup
instead of making its own, and a request refused before it gets there drops it
(``drop_prefetch``). Real Redis behind :class:`~tests.support.redis_proxy.RedisProxy`, which
shows what the gateway sent together.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.auth.ledger import _ADMIT
from app.sessions.store import SessionEntry
from tests.auth.test_limits_api import KEY, keyed_client, keyed_config
from tests.support.redis_proxy import RedisProxy

pytestmark = pytest.mark.redis

REDIS = "redis://127.0.0.1:6379/0"
ADMIT_SHA = hashlib.sha1(_ADMIT.encode()).hexdigest().encode()
GET = b"*2\r\n$3\r\nGET\r\n"  # a packed GET: the session lookup
SYSTEM = {"role": "system", "content": "You are a travel agent."}
FIRST = [SYSTEM, {"role": "user", "content": "Plan three days in Porto"}]
SECOND = [
    *FIRST,
    {"role": "assistant", "content": "Day 1: Ribeira. Day 2: Foz. Day 3: port cellars."},
    {"role": "user", "content": "Add a day trip"},
]


@pytest.fixture
def shared(prefixed_redis: aioredis.Redis) -> aioredis.Redis:
    return prefixed_redis


@pytest.fixture
async def proxy() -> AsyncIterator[RedisProxy]:
    async with RedisProxy() as p:
        yield p


class GatedStore:
    """The app's Redis session store behind a gate: a lookup waits while it is closed (a
    slow Redis), and the store counts the lookups made and the ones abandoned."""

    remote = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.open.set()
        self.lookups = 0
        self.abandoned = 0

    async def get(self, key: str) -> SessionEntry | None:
        self.lookups += 1
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        entry: SessionEntry | None = await self.inner.get(key)
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def limited_gateway(
    app_client, url: str, prefix: str, rpm: int = 100, **key: Any
) -> tuple[Any, Any, Any]:
    client, clock, app = await keyed_client(
        app_client,
        keyed_config(rate_limit={"requests_per_minute": rpm}, **key),
        redis_url=url,
        auth_key_prefix=prefix + "auth:",
        session_key_prefix=prefix + "session:",
        feedback_key_prefix=prefix + "feedback:",
        breaker_redis_prefix=prefix,
    )
    sessions = app.state.gateway.sessions
    store = sessions.store = GatedStore(sessions.store)
    return client, clock, store


def sessions_later(store: GatedStore, seconds: float) -> None:
    """Move the Redis session store's clock (and its local mirror's) ``seconds`` on."""
    inner = store.inner
    now = inner._clock
    inner._clock = inner._local._clock = lambda: now() + seconds


async def chat(client, messages: list[dict[str, Any]]):
    return await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": messages, "user": "traveller-7"},
        headers={"authorization": f"Bearer {KEY}"},
    )


async def test_the_prefetched_session_is_the_one_used_and_shares_the_limit_round_trip(
    app_client, shared, proxy, redis_prefix
) -> None:
    client, _, store = await limited_gateway(app_client, proxy.url, redis_prefix, rpm=100)
    first = await chat(client, FIRST)
    assert first.status_code == 200 and first.headers["x-pareto-session"] == "new"
    proxy.sent.clear()
    second = await chat(client, SECOND)
    assert second.status_code == 200 and second.headers["x-pareto-session"] == "sticky"
    assert second.headers["x-pareto-deployment"] == first.headers["x-pareto-deployment"]
    assert store.lookups == 2  # one per request: handle_chat used the prefetched one
    # The lookup left in the same write as the rate-limit check.
    (together,) = [chunk for chunk in proxy.sent if ADMIT_SHA in chunk]
    assert GET in together
    assert sum(chunk.count(GET) for chunk in proxy.sent) == 1


async def test_a_request_refused_by_its_rate_limit_drops_its_session_lookup(
    app_client, shared, proxy, redis_prefix
) -> None:
    client, clock, store = await limited_gateway(app_client, proxy.url, redis_prefix, rpm=1)
    first = await chat(client, FIRST)
    assert first.status_code == 200
    store.open.clear()  # Redis is slow to answer the next lookup
    refused = await asyncio.wait_for(chat(client, SECOND), 5)
    assert refused.status_code == 429  # not held up by the lookup
    await asyncio.sleep(0)
    assert (store.lookups, store.abandoned) == (2, 1)  # cancelled, not left waiting
    store.open.set()
    clock.now += 60  # the rate limit lets the next one through
    again = await chat(client, SECOND)
    assert again.status_code == 200 and again.headers["x-pareto-session"] == "sticky"
    assert again.headers["x-pareto-deployment"] == first.headers["x-pareto-deployment"]


async def test_a_request_refused_by_its_rate_limit_leaves_its_session_ttl_alone(
    app_client, prefixed_redis, redis_prefix
) -> None:
    # Real Redis, no proxy: what the refused request sent reached it.
    client, clock, store = await limited_gateway(app_client, REDIS, redis_prefix, rpm=1)
    first = await chat(client, FIRST)
    assert first.status_code == 200
    (session,) = [k async for k in prefixed_redis.scan_iter(match=redis_prefix + "session:*")]
    assert 590_000 < await prefixed_redis.pttl(session) <= 600_000  # PARETO_SESSION_TTL_S
    await prefixed_redis.pexpire(session, 100_000)  # as if the session had been idle 500 s
    sessions_later(store, 500)  # the store renews a session at most once per tenth of the TTL
    refused = await chat(client, SECOND)
    assert refused.status_code == 429
    # The refused turn did not keep the conversation alive: its lookup read, nothing more.
    assert 0 < await prefixed_redis.pttl(session) <= 100_000
    clock.now += 60
    again = await chat(client, SECOND)  # served: this turn renews the session
    assert again.status_code == 200 and again.headers["x-pareto-session"] == "sticky"
    for _ in range(100):  # the renewal is sent, not waited for
        if await prefixed_redis.pttl(session) > 590_000:
            break
        await asyncio.sleep(0.01)
    assert await prefixed_redis.pttl(session) > 590_000


async def test_a_request_refused_by_its_budget_leaves_its_session_ttl_alone(
    app_client, prefixed_redis, redis_prefix
) -> None:
    # The first request (about $0.000005) spends the whole day's budget.
    client, _, _ = await limited_gateway(
        app_client, REDIS, redis_prefix, budget={"daily_usd": 0.000001}
    )
    assert (await chat(client, FIRST)).status_code == 200
    (session,) = [k async for k in prefixed_redis.scan_iter(match=redis_prefix + "session:*")]
    await prefixed_redis.pexpire(session, 100_000)
    refused = await chat(client, SECOND)  # looked up and routed, then refused by the hold
    assert refused.status_code == 402
    assert 0 < await prefixed_redis.pttl(session) <= 100_000
