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

    async def touch(self, key: str) -> SessionEntry | None:
        self.lookups += 1
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        entry: SessionEntry | None = await self.inner.touch(key)
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def limited_gateway(app_client, url: str, prefix: str, rpm: int) -> tuple[Any, Any, Any]:
    client, clock, app = await keyed_client(
        app_client,
        keyed_config(rate_limit={"requests_per_minute": rpm}),
        redis_url=url,
        auth_key_prefix=prefix + "auth:",
        session_key_prefix=prefix + "session:",
        feedback_key_prefix=prefix + "feedback:",
        breaker_redis_prefix=prefix,
    )
    sessions = app.state.gateway.sessions
    store = sessions.store = GatedStore(sessions.store)
    return client, clock, store


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
    assert b"GETEX" in together
    assert sum(chunk.count(b"GETEX") for chunk in proxy.sent) == 1


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
