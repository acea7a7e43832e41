"""Chaos benchmark: a real gateway against simulated upstreams that fail in every way.

Run from the repo root (starts its own simulator, gateway and a private redis-server on free
ports, and stops them by PID):

    /work/venv/bin/python tests/benchmarks/bench_chaos.py [--n 2000] [--c 50]

Upstreams (``pareto simulate``, faults from the config below): the cheapest deployment fails
20% with 500/503, hangs 5%, is slow to its first token 5% and cuts 3% of streams after a few
chunks; a second one fails 5%; a third is healthy. Half the requests stream. The gateway runs
with a 0.5s first-token timeout and its breakers shared through the private Redis.

Two runs of N requests at concurrency C: Redis up throughout, then Redis killed halfway (the
gateway must keep serving; breakers degrade to per-process state and say so). Printed per
run: success rate, user-visible error rate (split: before the first byte / mid-stream cut),
attempts per request, fallback reasons, p50/p99 latency of the whole response.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.procs import gateway, simulator  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

FIRST_TOKEN_S = 0.5


def sim(price: float, **faults: Any) -> dict[str, Any]:
    return {
        "kind": "simulated",
        "price": {"input": price, "output": price * 2},
        "ttft_s": 0.05,
        "decode_tps": 400,
        "simulation": {"output_tokens": 24, "seed": int(price * 100), "faults": faults},
    }


def config() -> dict[str, Any]:
    return {
        "include": [str(ROOT / "config" / "policies.yaml")],
        "auth": {"enabled": False},
        "models": {"m": {"quality": 40, "context_window": 32000}},
        "deployments": {
            "m@flaky": sim(
                0.1,
                error_rate=0.2,
                error_status=[500, 503],
                hang_rate=0.05,
                slow_first_token_rate=0.05,
                slow_first_token_s=3.0,
                cut_rate=0.03,
            ),
            "m@meh": sim(0.2, error_rate=0.05),
            "m@solid": sim(0.4),
        },
    }


async def one(client: httpx.AsyncClient, i: int) -> dict[str, Any]:
    stream = i % 2 == 0
    body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "stream": stream}
    start = time.perf_counter()
    out: dict[str, Any] = {"ok": False, "kind": None}
    try:
        if stream:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                text = (await r.aread()).decode()
                out["status"] = r.status_code
                out["headers"] = r.headers
            events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
            if r.status_code != 200:
                out["kind"] = f"http_{r.status_code}"
            elif events[-1] == "[DONE]":
                out["ok"] = True
            else:
                out["kind"] = "mid_stream:" + orjson.loads(events[-1])["error"]["code"]
        else:
            r = await client.post("/v1/chat/completions", json=body)
            out["status"] = r.status_code
            out["headers"] = r.headers
            out["ok"] = r.status_code == 200 and bool(r.json().get("choices"))
            if not out["ok"]:
                out["kind"] = f"http_{r.status_code}"
    except httpx.HTTPError as exc:
        out["kind"] = f"client_{type(exc).__name__}"
    out["latency"] = time.perf_counter() - start
    return out


async def run(url: str, n: int, c: int, halfway: Any = None) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(c)
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def task(i: int) -> None:
            async with gate:
                results.append(await one(client, i))
            if halfway is not None and len(results) == n // 2:
                halfway()

        await asyncio.gather(*(task(i) for i in range(n)))
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(title: str, results: list[dict[str, Any]], wall: float) -> None:
    n = len(results)
    ok = sum(r["ok"] for r in results)
    kinds = collections.Counter(r["kind"] for r in results if not r["ok"])
    attempts = [int(r["headers"].get("x-pareto-attempts", 0)) for r in results if "headers" in r]
    reasons = collections.Counter(
        r["headers"].get("x-pareto-fallback-reason")
        for r in results
        if "headers" in r and r["headers"].get("x-pareto-fallback-reason")
    )
    lat = [r["latency"] * 1000 for r in results if r["ok"]]
    print(f"\n== {title}: {n} requests in {wall:.1f}s ({n / wall:.0f} req/s)")
    print(f"success rate          {ok / n:.2%}")
    print(f"user-visible errors   {(n - ok) / n:.2%}  {dict(kinds)}")
    print(f"attempts per request  {sum(attempts) / max(1, len(attempts)):.2f}")
    print(f"fallback reasons      {dict(reasons)}")
    print(f"latency p50 / p99     {pct(lat, 0.5):.0f} ms / {pct(lat, 0.99):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--c", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(os.environ.get("BENCH_DIR") or tmp_name)  # BENCH_DIR keeps the logs
        path = tmp / "chaos.yaml"
        path.write_text(yaml.safe_dump(config()))
        redis = RedisServer(tmp)
        redis.start()
        try:
            with simulator(tmp, "--config", str(path)) as upstream:
                env = {
                    "PARETO_SIMULATED_BASE_URL": upstream.url,
                    "PARETO_REDIS_URL": redis.url,
                    "PARETO_REDIS_TIMEOUT_S": "0.05",
                    "PARETO_FIRST_TOKEN_TIMEOUT_S": str(FIRST_TOKEN_S),
                    "PARETO_REQUEST_TIMEOUT_S": "10",
                    "PARETO_BREAKER_OPEN_S": "2",
                    "PARETO_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
                }
                with gateway(path, tmp, env=env) as gw:
                    start = time.perf_counter()
                    results = asyncio.run(run(gw.url, args.n, args.c))
                    report("Redis up", results, time.perf_counter() - start)

                    stopped_at: list[float] = []

                    def stop_redis() -> None:
                        redis.stop()
                        stopped_at.append(time.perf_counter())

                    start = time.perf_counter()
                    results = asyncio.run(run(gw.url, args.n, args.c, halfway=stop_redis))
                    report("Redis killed halfway", results, time.perf_counter() - start)
                    events = collections.Counter(
                        orjson.loads(line).get("event")
                        for line in gw.log_text().splitlines()
                        if line.startswith("{")
                    )
                    print(
                        "gateway log: breaker_redis_degraded x"
                        f"{events['breaker_redis_degraded']}, circuit_opened x"
                        f"{events['circuit_opened']}"
                    )
                    try:
                        metrics = httpx.get(f"{gw.url}/metrics", timeout=5).text
                        gauges = [
                            line
                            for line in metrics.splitlines()
                            if line.startswith(("pareto_redis_degraded", "pareto_breaker_state"))
                        ]
                        print("metrics:", *gauges, sep="\n  ")
                    except httpx.HTTPError:
                        pass
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
