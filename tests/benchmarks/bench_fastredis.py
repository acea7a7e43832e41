"""CPU per Redis call on the hot path: redis-py's asyncio client against :mod:`app.fastredis`.

Measures process CPU (robust on a shared box, unlike wall time) per call against a Redis on
loopback, under uvloop as in production: a GET through each client, sequentially and with
32 in flight, then the three per-request limit checks (``Guard.admit``, ``Ticket.hold``,
``Ticket.settle``: one Lua script each) on the hot-path client. Keys live under a unique
prefix and are deleted at the end.

    python -m tests.benchmarks.bench_fastredis [--n 5000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import uvloop

from app.auth.config import ApiKey
from app.auth.guard import Guard
from app.auth.ledger import RedisLedger
from app.fastredis import FastRedis
from app.telemetry.record import Record


async def cpu_us(n: int, call: Callable[[], Awaitable[Any]], in_flight: int = 1) -> float:
    """CPU µs per call, after a warm-up; ``in_flight`` calls are issued together."""
    for _ in range(200):
        await call()
    start = time.process_time()
    for _ in range(n // in_flight):
        if in_flight == 1:
            await call()
        else:
            await asyncio.gather(*[call() for _ in range(in_flight)])
    return (time.process_time() - start) / (n // in_flight * in_flight) * 1e6


async def main(n: int, url: str) -> None:
    prefix = f"pareto-bench-{uuid.uuid4().hex[:8]}:"
    # Timeouts set as in the app (their presence costs CPU, not their value), but long
    # enough that a loaded box does not fail the run.
    redis = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    hot = FastRedis(url, timeout_s=1.0)
    key = prefix + "k"
    try:
        await redis.set(key, "x" * 40)
        rows = [
            ("GET, redis-py", await cpu_us(n, lambda: redis.get(key))),
            ("GET, fastredis", await cpu_us(n, lambda: hot.execute("GET", key))),
            ("GET, redis-py, 32 in flight", await cpu_us(n, lambda: redis.get(key), 32)),
            ("GET, fastredis, 32 in flight", await cpu_us(n, lambda: hot.execute("GET", key), 32)),
        ]
        guard = Guard(RedisLedger(hot, prefix))
        api_key = ApiKey(
            name="bench",
            key_hash="x",
            requests_per_minute=10**9,
            tokens_per_minute=10**12,
            daily_usd=1e9,
            monthly_usd=1e10,
        )
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}
        record = Record(request_id="bench")
        record.cost_usd, record.input_tokens, record.output_tokens = 0.0001, 10, 16
        spent = {"admit": 0.0, "hold": 0.0, "settle": 0.0}
        for i in range(n + 200):
            c0 = time.process_time()
            ticket = await guard.admit(api_key, body)
            c1 = time.process_time()
            await ticket.hold(0.0001, deadline_s=900.0)
            c2 = time.process_time()
            await ticket.settle(record)
            c3 = time.process_time()
            if i >= 200:
                spent["admit"] += c1 - c0
                spent["hold"] += c2 - c1
                spent["settle"] += c3 - c2
        rows += [(f"Guard {step} (Lua), fastredis", s / n * 1e6) for step, s in spent.items()]
        for label, us in rows:
            print(f"{label:<34} {us:7.1f} µs CPU per call")
    finally:
        keys = [k async for k in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await hot.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    uvloop.run(main(args.n, args.redis))
