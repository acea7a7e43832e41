"""A primary failing 30% (500s) and hanging 10%, a healthy fallback: nobody sees an error."""

from __future__ import annotations

import asyncio
import time

import orjson

from tests.conftest import sim_deployment, small_config

FIRST_TOKEN_S = 0.5
N = 1000


def chaos_config() -> dict:
    primary = sim_deployment(
        price_in=0.1,
        price_out=0.2,
        ttft_s=0.01,
        realtime=True,
        seed=7,
        faults={"error_rate": 0.3, "error_status": [500], "hang_rate": 0.1},
    )
    fallback = sim_deployment(price_in=0.2, price_out=0.4, ttft_s=0.03, realtime=True)
    return small_config(**{"small@sim": primary, "small@sim2": fallback})


async def test_thousand_requests_zero_user_visible_errors(app_client) -> None:
    # Breakers effectively off: every request meets the primary's faults and fails over.
    client = await app_client(
        chaos_config(),
        first_token_timeout_s=FIRST_TOKEN_S,
        breaker_failures=10**6,
        breaker_min_requests=10**6,
    )
    gate = asyncio.Semaphore(25)
    results: list[tuple[int, float, int, str, int]] = []

    async def one(i: int) -> None:
        stream = i % 2 == 1
        body = {
            "model": "small",
            "messages": [{"role": "user", "content": f"request {i}"}],
            "max_tokens": 8,
            "stream": stream,
        }
        async with gate:
            start = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            elapsed = time.perf_counter() - start
        if stream:
            events = [e.removeprefix("data: ") for e in r.text.strip().split("\n\n")]
            finals = events.count("[DONE]")
            errors = sum(1 for e in events if e.startswith('{"error"'))
            assert errors == 0, r.text
        else:
            finals = 1 if orjson.loads(r.content).get("choices") else 0
        results.append(
            (
                r.status_code,
                elapsed,
                int(r.headers["x-pareto-attempts"]),
                r.headers["x-pareto-deployment"],
                finals,
            )
        )

    await asyncio.gather(*(one(i) for i in range(N)))
    assert len(results) == N
    assert [s for s, *_ in results if s != 200] == []  # zero user-visible errors
    assert all(finals == 1 for *_, finals in results)  # exactly one final response each
    served_by_fallback = [r for r in results if r[3] == "small@sim2"]
    # The failures really happened (~40% of first attempts) and were absorbed.
    assert 0.3 * N <= len(served_by_fallback) <= 0.5 * N
    # Latency: under first-token timeout + the healthy path's p99 (requests served on their
    # first attempt, under the same load), with 1 s for the event loop of a busy 2-core box
    # running other tests (50 ms and 250 ms both flaked under load). A hung primary not cut
    # at the first-token timeout would wait out the simulator's 300 s hang, so the bound
    # still proves the point by two orders of magnitude.
    latencies = sorted(e for _, e, *_ in results)
    p99 = latencies[int(0.99 * N) - 1]
    healthy = sorted(e for _, e, attempts, *_ in results if attempts == 1)
    healthy_p99 = healthy[int(0.99 * len(healthy)) - 1]
    print(
        "p99",
        p99,
        "healthy",
        healthy_p99,
        "fallback",
        len(served_by_fallback),
        sum(r[2] for r in results),
    )
    assert p99 < FIRST_TOKEN_S + max(healthy_p99, 0.03) + 1.0, (p99, healthy_p99)
