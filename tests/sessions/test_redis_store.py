"""The Redis store against a real Redis: one round trip per use, TTLs, and degrading safely."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app.fastredis import FastRedis
from app.sessions.memory import MemorySessionStore
from app.sessions.redis_store import RedisSessionStore
from app.sessions.store import SessionEntry
from tests.support.procs import free_port
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.redis
ENTRY = SessionEntry("gpt-oss-120b@groq", "auto")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(url: str = "redis://127.0.0.1:6379/0") -> aioredis.Redis:
    """redis-py, to look at what the store wrote."""
    return aioredis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)


@pytest.fixture
def shared(prefixed_redis: aioredis.Redis) -> aioredis.Redis:
    return prefixed_redis


@pytest.fixture
async def hot() -> AsyncIterator[FastRedis]:
    """The hot-path client the store runs on (as in the app)."""
    fast = FastRedis("redis://127.0.0.1:6379/0", timeout_s=0.5)
    yield fast
    await fast.aclose()


async def test_roundtrip_stores_only_the_entry_and_a_served_turn_renews_its_ttl(
    shared: aioredis.Redis, hot: FastRedis, redis_prefix: str
) -> None:
    clock = Clock()
    store = RedisSessionStore(hot, ttl_s=600, prefix=redis_prefix, clock=clock)
    assert await store.get("k1") is None
    await store.put("k1", ENTRY)
    raw = await shared.get(redis_prefix + "k1")
    assert raw == b'{"d":"gpt-oss-120b@groq","r":"auto"}'
    await shared.pexpire(redis_prefix + "k1", 5_000)  # as if idle for almost ten minutes
    clock.now += 595
    assert await store.get("k1") == ENTRY
    assert await shared.pttl(redis_prefix + "k1") <= 5_000  # a read leaves the TTL alone
    store.refresh("k1", ENTRY)  # sent now, not waited for
    assert await hot.execute("PING") == b"PONG"  # answered after the renewal, in order
    assert await shared.pttl(redis_prefix + "k1") > 590_000
    assert store.status().degraded is False


async def renewed_ttl(store: RedisSessionStore, hot: FastRedis, shared, key: str, entry) -> int:
    """A served turn's renewal (sent, not waited for), then the key's TTL in ms once Redis has
    answered what came before a PING."""
    store.refresh(key, entry)
    assert await hot.execute("PING") == b"PONG"
    return int(await shared.pttl(store._prefix + key))


async def test_turns_seconds_apart_renew_a_session_once_per_tenth_of_its_ttl(
    shared: aioredis.Redis, hot: FastRedis, redis_prefix: str
) -> None:
    # An agent's turns come seconds apart: a SET for each would be one more Redis command per
    # request. A session this process wrote or renewed under ttl/10 ago is not renewed again.
    clock = Clock()
    store = RedisSessionStore(hot, ttl_s=600, prefix=redis_prefix, clock=clock)
    key = redis_prefix + "agent"
    await store.put("agent", ENTRY)
    await shared.pexpire(key, 300_000)  # marks what a renewal would undo
    for _ in range(5):
        clock.now += 10  # 10..50 s after the write: not renewed
        assert await renewed_ttl(store, hot, shared, "agent", ENTRY) <= 300_000
    clock.now += 15  # 65 s: past a tenth of the TTL
    assert await renewed_ttl(store, hot, shared, "agent", ENTRY) > 590_000
    await shared.pexpire(key, 300_000)
    clock.now += 30  # 30 s after that renewal: not again
    assert await renewed_ttl(store, hot, shared, "agent", ENTRY) <= 300_000
    # What Redis lost is copied back on the next turn, throttle or not.
    await shared.delete(key)
    assert await store.get("agent") == ENTRY  # from the local mirror; Redis lacks it
    assert await renewed_ttl(store, hot, shared, "agent", ENTRY) > 590_000
    assert await shared.get(key) == ENTRY.encode()


async def test_a_session_written_after_redis_lost_it_is_not_renewed_again_at_once(
    shared: aioredis.Redis, hot: FastRedis, redis_prefix: str
) -> None:
    clock = Clock()
    store = RedisSessionStore(hot, ttl_s=600, prefix=redis_prefix, clock=clock)
    key = redis_prefix + "moved"
    await store.put("moved", ENTRY)
    await shared.delete(key)  # lost by Redis; the local mirror still has it
    assert await store.get("moved") == ENTRY  # marked for copy-back
    moved = SessionEntry("other@p", "auto")
    await store.put("moved", moved)  # the conversation moved: written, so in Redis again
    await shared.pexpire(key, 300_000)
    clock.now += 10  # 10 s after that write: nothing to copy back, so not renewed
    assert await renewed_ttl(store, hot, shared, "moved", moved) <= 300_000


async def test_two_stores_on_one_redis_share_sessions(
    shared: aioredis.Redis, hot: FastRedis, redis_prefix: str
) -> None:
    one = RedisSessionStore(hot, ttl_s=60, prefix=redis_prefix)
    other = FastRedis("redis://127.0.0.1:6379/0", timeout_s=0.5)  # another process's
    two = RedisSessionStore(other, ttl_s=60, prefix=redis_prefix)
    await one.put("k", ENTRY)
    assert await two.get("k") == ENTRY
    await other.aclose()


async def test_unreachable_redis_serves_from_local_and_logs_once_per_incident() -> None:
    dead = FastRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    clock = Clock()
    local = MemorySessionStore(60, clock=clock)
    store = RedisSessionStore(
        dead, ttl_s=60, prefix="x:", retry_after_s=1.0, local=local, clock=clock
    )
    with capture_logs() as logs:
        await store.put("k", ENTRY)  # fails, but is kept locally
        for _ in range(5):
            assert await store.get("k") == ENTRY
            store.refresh("k", ENTRY)
        clock.now += 1.5  # retry window over: the next use probes Redis again, still down
        assert await store.get("k") == ENTRY
    status = store.status()
    assert status.degraded and status.incidents == 1
    assert status.errors == 2  # the put, then one probe: no Redis call inside the window
    assert [e["event"] for e in logs] == ["session_store_degraded"]
    await dead.aclose()


async def test_resumes_redis_after_restart_and_copies_local_sessions_back(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as server:
        redis = client(server.url)
        hot = FastRedis(server.url, timeout_s=0.3)
        clock = Clock()
        flags: list[bool] = []
        store = RedisSessionStore(
            hot,
            ttl_s=60,
            prefix="p:",
            retry_after_s=1.0,
            clock=clock,
            on_degraded=flags.append,
        )
        await store.put("before", ENTRY)
        server.stop()
        with capture_logs() as logs:
            assert await store.get("before") == ENTRY  # local mirror
            await store.put("during", ENTRY)
            server.start()
            clock.now += 2
            assert await store.get("during") == ENTRY  # Redis lacks it: the mirror has it
            store.refresh("during", ENTRY)  # the turn served on it copies it back
            assert await hot.execute("PING") == b"PONG"
        assert store.status().degraded is False
        assert [e["event"] for e in logs] == ["session_store_degraded", "session_store_recovered"]
        assert flags == [True, False]
        # The session made during the outage now lives in Redis for the other processes.
        assert await redis.get("p:during") == ENTRY.encode()
        await redis.aclose()
        await hot.aclose()


async def test_prefetch_is_the_same_lookup_sent_with_the_next_command(
    shared: aioredis.Redis, hot: FastRedis, redis_prefix: str
) -> None:
    from app.sessions import Sessions

    sessions = Sessions(RedisSessionStore(hot, ttl_s=600, prefix=redis_prefix))
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"x-pareto-session-id": "conv-1"}
    first = await sessions.lookup(body, headers)
    assert first.key is not None
    await sessions.remember(first, "small@sim", "auto")
    pending = sessions.prefetch(body, headers)
    assert pending is not None
    ping = hot.execute("PING")  # queued in the same loop iteration: one write for both
    looked_up, pong = await pending, await ping
    assert pong == b"PONG"
    assert looked_up == await sessions.lookup(body, headers)
    assert looked_up.entry == SessionEntry("small@sim", "auto")
    # Nothing to prefetch without a network store or without a session key.
    assert Sessions(MemorySessionStore(600)).prefetch(body, headers) is None
    assert sessions.prefetch({"model": "auto", "messages": []}, {}) is None
