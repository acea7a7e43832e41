"""The hot-path Redis client against a real Redis: order, pipelining, scripts, failures."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from app.fastredis import FastRedis
from tests.support.procs import free_port
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.redis
URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def admin(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """redis-py on its own connection: inspects, kills our connection, cleans up."""
    client = aioredis.Redis.from_url(URL, socket_timeout=2)
    yield client
    for db in (0, 5):
        await client.execute_command("SELECT", db)
        keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
        if keys:
            await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def fast() -> AsyncIterator[FastRedis]:
    client = FastRedis(URL, timeout_s=1.0)
    yield client
    await client.aclose()


class CountingTransport:
    """Counts the writes of a connection (to see commands leave together)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_commands_and_replies_are_redis_py_shaped(fast: FastRedis, redis_prefix: str) -> None:
    key = redis_prefix + "k"
    assert await fast.execute("SET", key, "v", "PX", 60_000) == b"OK"
    assert await fast.execute("GET", key) == b"v"
    assert await fast.execute("GET", redis_prefix + "missing") is None
    assert await fast.execute("INCRBY", redis_prefix + "n", 5) == 5
    assert await fast.execute("HSET", redis_prefix + "h", "a", 1, "b", 2.5) == 2
    assert await fast.execute("HMGET", redis_prefix + "h", "a", "b", "c") == [b"1", b"2.5", None]
    assert await fast.ping() is True


async def test_hundreds_of_concurrent_calls_each_get_their_own_reply(
    fast: FastRedis, redis_prefix: str
) -> None:
    values = [f"v{i}-{uuid.uuid4().hex}" for i in range(600)]
    echoed = await asyncio.gather(*[fast.execute("ECHO", v) for v in values])
    assert echoed == [v.encode() for v in values]

    async def write_then_read(i: int) -> bytes:
        await asyncio.sleep(0.001 * (i % 7))  # interleave across loop iterations
        await fast.execute("SET", f"{redis_prefix}{i}", i, "PX", 60_000)
        got: bytes = await fast.execute("GET", f"{redis_prefix}{i}")
        return got

    got = await asyncio.gather(*[write_then_read(i) for i in range(300)])
    assert got == [str(i).encode() for i in range(300)]


async def test_calls_issued_in_one_loop_iteration_leave_in_one_write(fast: FastRedis) -> None:
    conn = await fast.connection()
    counting = CountingTransport(conn._transport)
    conn._transport = counting  # type: ignore[assignment]
    assert await asyncio.gather(*[fast.execute("ECHO", str(i)) for i in range(50)]) == [
        str(i).encode() for i in range(50)
    ]
    assert len(counting.writes) == 1
    assert counting.writes[0].count(b"ECHO") == 50


async def test_pipeline_returns_replies_in_order_and_raises_the_first_error(
    fast: FastRedis, redis_prefix: str
) -> None:
    key = redis_prefix + "p"
    assert await fast.pipeline([("SET", key, "1"), ("INCR", key), ("GET", key)]) == [
        b"OK",
        2,
        b"2",
    ]
    assert await fast.pipeline([]) == []
    with pytest.raises(ResponseError, match="not an integer"):
        await fast.pipeline([("SET", key, "x"), ("INCR", key), ("SET", key, "after")])
    # Every reply of the failed pipeline was consumed: the connection is still in step.
    assert await fast.execute("GET", key) == b"after"


async def test_error_replies_raise_redis_py_exceptions(fast: FastRedis, redis_prefix: str) -> None:
    await fast.execute("SET", redis_prefix + "s", "text")
    with pytest.raises(ResponseError, match="not an integer"):
        await fast.execute("INCR", redis_prefix + "s")
    with pytest.raises(ResponseError, match="unknown command"):
        await fast.execute("NOSUCHCOMMAND")
    assert await fast.execute("ECHO", "still in order") == b"still in order"


async def test_script_falls_back_to_eval_on_noscript_then_runs_by_sha(
    fast: FastRedis, admin: aioredis.Redis, redis_prefix: str
) -> None:
    # A body Redis has never seen (a fresh comment), so the first EVALSHA answers NOSCRIPT
    # without flushing the shared script cache.
    body = f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    script = fast.register_script(body)
    assert await admin.script_exists(script.sha) == [False]
    with pytest.raises(NoScriptError):
        await fast.execute("EVALSHA", script.sha, 1, redis_prefix + "c", 1)
    assert await script(keys=[redis_prefix + "c"], args=[2]) == 2
    assert await admin.script_exists(script.sha) == [True]  # EVAL cached it
    assert await script(keys=[redis_prefix + "c"], args=[3]) == 5
    failing = fast.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.error_reply('nope')")
    with pytest.raises(ResponseError, match="nope"):
        await failing()


async def test_a_timed_out_call_keeps_the_order_and_its_late_reply_is_dropped(
    redis_prefix: str,
) -> None:
    fast = FastRedis(URL, timeout_s=0.1, dead_after_s=5.0)
    try:
        blocked = asyncio.ensure_future(fast.execute("BLPOP", redis_prefix + "never", 0.3))
        queued = asyncio.ensure_future(fast.execute("ECHO", "queued"))
        with pytest.raises(TimeoutError):
            await blocked
        with pytest.raises(TimeoutError):
            await queued  # behind the blocked one on the same connection
        await asyncio.sleep(0.6)  # BLPOP's nil and ECHO's reply arrive and are dropped
        assert await fast.execute("ECHO", "fresh") == b"fresh"
        assert isinstance(TimeoutError("x"), RedisError)
    finally:
        await fast.aclose()


async def test_a_call_after_a_timed_out_one_still_times_out_at_its_own_deadline(
    redis_prefix: str,
) -> None:
    # Once the first call timed out, the connection's timer waited for the dead-peer check
    # (5 s away), so a call made then was not bounded by timeout_s at all.
    fast = FastRedis(URL, timeout_s=0.1, dead_after_s=5.0)
    loop = asyncio.get_running_loop()
    try:
        blocked = asyncio.ensure_future(fast.execute("BLPOP", redis_prefix + "never", 0.6))
        with pytest.raises(TimeoutError):
            await blocked
        started = loop.time()
        with pytest.raises(TimeoutError):
            await fast.execute("ECHO", "behind the blocked one")
        assert loop.time() - started < 0.3
    finally:
        await fast.aclose()


async def test_a_silent_peer_is_dropped_after_dead_after_and_the_client_reconnects(
    redis_prefix: str,
) -> None:
    fast = FastRedis(URL, timeout_s=0.2, dead_after_s=0.5)
    try:
        first = await fast.execute("CLIENT", "ID")
        blocked = asyncio.ensure_future(fast.execute("BLPOP", redis_prefix + "never", 5))
        with pytest.raises(TimeoutError):
            await blocked
        await asyncio.sleep(0.5)  # past dead_after: the connection was dropped
        assert await fast.execute("ECHO", "again") == b"again"
        assert await fast.execute("CLIENT", "ID") != first  # a new connection
    finally:
        await fast.aclose()


async def test_connection_killed_fails_waiters_and_the_next_call_reconnects(
    fast: FastRedis, admin: aioredis.Redis, redis_prefix: str
) -> None:
    client_id = await fast.execute("CLIENT", "ID")
    pending = asyncio.ensure_future(fast.execute("BLPOP", redis_prefix + "never", 5))
    await asyncio.sleep(0.05)
    assert await admin.client_kill_filter(_id=client_id) == 1
    with pytest.raises(ConnectionError):
        await pending
    assert await fast.execute("ECHO", "back") == b"back"
    assert await fast.execute("CLIENT", "ID") != client_id


async def test_unreachable_redis_raises_connection_error_fast() -> None:
    fast = FastRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    try:
        for _ in range(2):
            with pytest.raises(ConnectionError, match="Error connecting"):
                await fast.execute("PING")
        results = await asyncio.gather(
            *[fast.execute("PING") for _ in range(5)], return_exceptions=True
        )
        assert all(isinstance(r, ConnectionError) for r in results)
    finally:
        await fast.aclose()


async def test_a_server_that_never_answers_the_handshake_times_out_the_connect() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fast = FastRedis(f"redis://:secret@127.0.0.1:{port}/0", timeout_s=0.1)
    try:
        with pytest.raises(TimeoutError, match="connecting"):
            await fast.execute("PING")
    finally:
        await fast.aclose()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_db_number_in_the_url_selects_the_database(
    admin: aioredis.Redis, redis_prefix: str
) -> None:
    fast = FastRedis("redis://127.0.0.1:6379/5", timeout_s=1.0, client_name="pareto-test")
    try:
        await fast.execute("SET", redis_prefix + "db", "five", "PX", 60_000)
        assert await fast.execute("CLIENT", "GETNAME") == b"pareto-test"
    finally:
        await fast.aclose()
    assert await admin.get(redis_prefix + "db") is None
    await admin.execute_command("SELECT", 5)
    assert await admin.get(redis_prefix + "db") == b"five"


async def test_password_in_the_url_logs_in_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    with redis_server(tmp_path, password="s3cret/pw") as server:
        good = FastRedis(f"redis://:s3cret%2Fpw@127.0.0.1:{server.port}/2", timeout_s=1.0)
        bad = FastRedis(f"redis://:wrong@127.0.0.1:{server.port}/0", timeout_s=1.0)
        try:
            assert await good.execute("SET", "k", "v") == b"OK"
            assert (await good.execute("CLIENT", "INFO")).find(b"db=2") >= 0
            with pytest.raises(AuthenticationError):
                await bad.execute("PING")
            assert isinstance(AuthenticationError("x"), ConnectionError)
        finally:
            await good.aclose()
            await bad.aclose()


async def test_restarted_server_loses_scripts_and_the_client_recovers(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        fast = FastRedis(server.url, timeout_s=0.5)
        script = fast.register_script("return redis.call('INCR', KEYS[1])")
        try:
            assert await script(keys=["n"]) == 1
            server.stop()
            with pytest.raises(ConnectionError):
                await fast.execute("PING")
            server.start()
            assert await script(keys=["n"]) == 1  # new server, empty, script cache empty
            assert await script(keys=["n"]) == 2
        finally:
            await fast.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(
    fast: FastRedis, redis_prefix: str
) -> None:
    slow = asyncio.ensure_future(fast.execute("BLPOP", redis_prefix + "never", 0.1))
    after = asyncio.ensure_future(fast.execute("ECHO", "after"))
    await asyncio.sleep(0.01)
    slow.cancel()
    assert await after == b"after"
    assert await fast.execute("ECHO", "next") == b"next"


async def test_closing_fails_waiters_and_later_calls(redis_prefix: str) -> None:
    fast = FastRedis(URL, timeout_s=2.0)
    await fast.execute("PING")
    pending = asyncio.ensure_future(fast.execute("BLPOP", redis_prefix + "never", 1))
    await asyncio.sleep(0.02)
    await fast.aclose()
    with pytest.raises(ConnectionError):
        await pending
    with pytest.raises(ConnectionError, match="closed"):
        await fast.execute("PING")
    await fast.aclose()  # idempotent


async def test_no_reply_ever_reaches_the_wrong_caller_under_cancels_and_a_kill(
    fast: FastRedis, admin: aioredis.Redis
) -> None:
    rng = random.Random(7)
    outcomes: dict[str, int] = {"ok": 0, "cancelled": 0, "lost": 0}

    async def one(i: int) -> None:
        await asyncio.sleep(rng.random() * 0.02)  # spread over the kill below
        value = f"{i}-{rng.random()}"
        call = asyncio.ensure_future(fast.execute("ECHO", value))
        if rng.random() < 0.1:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            call.cancel()
        try:
            assert await call == value.encode()
            outcomes["ok"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        except ConnectionError:
            outcomes["lost"] += 1

    killed: list[int] = []

    async def killer() -> None:
        await asyncio.sleep(0.01)
        killed.append(await fast.execute("CLIENT", "ID"))
        await admin.client_kill_filter(_id=killed[0])

    for batch in range(10):
        tasks = [one(batch * 200 + i) for i in range(200)]
        await asyncio.gather(*tasks, *([killer()] if batch == 5 else []))
    assert outcomes["ok"] > 1500 and outcomes["cancelled"] > 50
    assert await fast.execute("CLIENT", "ID") not in killed  # it reconnected
