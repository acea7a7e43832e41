"""Added latency of auth + rate-limit + budget checks per request, with a real Redis.

What a request with a limited, budgeted run-time key pays on top of an unauthenticated one:
the key lookup (Redis GET), the rate-limit admission (one Lua script that also reads the
budget state), the budget hold (Lua) and the settlement after the response (Lua). Measured
in-process against Redis on loopback, sequentially and with 32 requests in flight.

    .venv/bin/python tests/benchmarks/bench_auth.py [--n 5000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import redis.asyncio as aioredis

from app.auth.authenticate import Authenticator
from app.auth.config import ApiKey, AuthConfig, generate_key, hash_key
from app.auth.guard import Guard
from app.auth.ledger import MemoryLedger, RedisLedger
from app.auth.store import RedisKeyStore
from app.fastredis import FastRedis
from app.telemetry.record import Record

BODY = {"model": "small", "messages": [{"role": "user", "content": "Say hello " * 20}]}


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def one(authn: Authenticator, guard: Guard, header: str) -> float:
    start = time.perf_counter()
    key = await authn.authenticate(header)
    ticket = await guard.admit(key, BODY)
    await ticket.hold(0.00002, deadline_s=900.0)
    record = Record(request_id="r", input_tokens=60, output_tokens=16, cost_usd=0.000019)
    await ticket.settle(record)
    return (time.perf_counter() - start) * 1000


async def run(label: str, authn: Authenticator, guard: Guard, header: str, n: int) -> None:
    for _ in range(200):  # warm up connections and scripts
        await one(authn, guard, header)
    seq = [await one(authn, guard, header) for _ in range(n)]
    sem = asyncio.Semaphore(32)

    async def limited() -> float:
        async with sem:
            return await one(authn, guard, header)

    started = time.perf_counter()
    conc = await asyncio.gather(*(limited() for _ in range(n)))
    wall = time.perf_counter() - started
    print(
        f"{label:<34} sequential p50 {statistics.median(seq):6.3f} ms  p99 {pct(seq, 99):6.3f} ms"
        f" | 32 in flight p50 {statistics.median(conc):6.3f} ms  p99 {pct(conc, 99):6.3f} ms"
        f"  ({n / wall:,.0f} checks/s)"
    )


async def main(n: int, url: str) -> None:
    prefix = f"pareto-bench-{uuid.uuid4().hex[:8]}:"
    redis = aioredis.Redis.from_url(url, socket_timeout=1, max_connections=64)
    hot = FastRedis(url, timeout_s=1)
    secret = generate_key()
    limits = dict(requests_per_minute=10**9, tokens_per_minute=10**12, daily_usd=1e9)
    runtime = ApiKey(name="bench", key_hash=hash_key(secret), source="redis", **limits)
    store = RedisKeyStore(redis, prefix)
    await store.create(runtime)
    static_secret = generate_key()
    static = ApiKey(name="static", key_hash=hash_key(static_secret), **limits)
    config = AuthConfig(by_hash={static.key_hash: static}, by_name={"static": static})
    try:
        redis_guard = Guard(RedisLedger(hot, prefix))
        await run(
            "run-time key, Redis limits+budget",
            Authenticator(lambda: config, store),
            redis_guard,
            f"Bearer {secret}",
            n,
        )
        await run(
            "static key, Redis limits+budget",
            Authenticator(lambda: config, store),
            redis_guard,
            f"Bearer {static_secret}",
            n,
        )
        await run(
            "static key, per-process limits",
            Authenticator(lambda: config, None),
            Guard(MemoryLedger()),
            f"Bearer {static_secret}",
            n,
        )
        plain = ApiKey(name="plain", key_hash=hash_key("x" * 20))
        plain_config = AuthConfig(by_hash={plain.key_hash: plain})
        await run(
            "static key, no limits",
            Authenticator(lambda: plain_config, None),
            Guard(MemoryLedger()),
            "Bearer " + "x" * 20,
            n,
        )
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
    asyncio.run(main(args.n, args.redis))
