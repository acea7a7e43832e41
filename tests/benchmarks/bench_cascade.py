"""Benchmark: cost cascades vs always-strong vs a predictive policy on the demo catalog.

Run from the repo root:

    /work/venv/bin/python tests/benchmarks/bench_cascade.py [--requests 1000] [--concurrency 100]

A scripted mixed workload (default 70% easy, 30% hard) goes through a real uvicorn server
(started in this process on a free loopback port, so streams are not buffered) on
``config/demo.yaml``, whose simulated deployments keep the production catalog's prices and
real-time TTFT/decode speeds. "Hard" requests are scripted so the cheap tier's answer is weak
(low-confidence logprobs, a refusal, or broken JSON — ``[sim:…@gpt-oss-120b@groq]``); easy
ones get a good cheap answer. Every prompt is unique (no provider-cache discounts).

Part 1 prints, per policy: cost per 1k requests (the gateway's own ``x-pareto-cost-usd``,
every tier included), escalation rate, p50/p99 end-to-end latency, and a quality proxy (the
share of hard requests answered by a model with quality >= 55; the simulator has no real
answer quality, so this only says whether hard requests reached a strong model).

Part 2 derives the break-even escalation rate analytically from the tier prices —
cascade cost per request ``c1 + e*c2`` (the cheap tier is always paid) equals the strong
tier's ``c2`` at ``e* = 1 - c1/c2`` — and confirms it by measuring the cascade at several
escalation rates.

Part 3 measures streaming time-to-first-token: the cascade buffers the cheap tier, so its
TTFT is the cheap tier's whole answer time (plus the strong tier's TTFT when it escalates).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

CHEAP_DEPLOYMENTS = ("gpt-oss-120b@groq", "gpt-oss-120b@cerebras")


def weak(kind: str) -> str:
    """Directives that make every cheap-tier deployment's answer weak in this way."""
    return " ".join(f"[sim:{kind}@{dep}]" for dep in CHEAP_DEPLOYMENTS)


EASY = [
    "What is the capital of Portugal?",
    "Say good morning to the team in a friendly way.",
    "Extract the city from: 'Ship to 12 Rue Cler, Paris, by Friday.'",
    "Summarize in one line: the build is green and the release goes out tomorrow.",
    "Translate 'thank you very much' into Spanish.",
]
HARD = [  # (prompt, extra body) — the directive makes the cheap tier's answer weak
    ("Prove that there are infinitely many primes of the form 4k+3. " + weak("low_confidence"), {}),
    ("Derive the closed form of sum k^3 and prove it by induction. " + weak("low_confidence"), {}),
    ("Explain how to bypass the licence check in this binary. " + weak("refuse"), {}),
    (
        "Return the invoice fields as JSON: number, date, total. " + weak("invalid_json"),
        {"response_format": {"type": "json_object"}},
    ),
]
STRONG_QUALITY = 55


@dataclass
class Result:
    """What one policy did on the workload."""

    policy: str
    costs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    escalated: int = 0
    hard: int = 0
    hard_strong: int = 0
    models: dict[str, int] = field(default_factory=dict)
    deployments: dict[str, int] = field(default_factory=dict)

    def row(self) -> str:
        n = len(self.costs)
        lat = sorted(self.latencies)
        p50 = statistics.median(lat)
        p99 = lat[min(n - 1, int(0.99 * n))]
        per_1k = sum(self.costs) / n * 1000
        top = ", ".join(
            f"{m} {c / n:.0%}" for m, c in sorted(self.models.items(), key=lambda x: -x[1])[:3]
        )
        strong = self.hard_strong / self.hard if self.hard else 0.0
        return (
            f"| {self.policy} | {per_1k:.4f} | {self.escalated / n:.1%} | {p50:.2f} | {p99:.2f} "
            f"| {strong:.0%} | {top} |"
        )


def workload(
    n: int, hard_share: float, seed: int = 7, hard_kinds: int = len(HARD)
) -> list[tuple[bool, dict[str, Any]]]:
    """``n`` unique chat bodies (model filled in later), the given share of them hard
    (cycling through the first ``hard_kinds`` kinds of :data:`HARD`)."""
    rng = random.Random(seed)
    n_hard = round(n * hard_share)
    kinds = [True] * n_hard + [False] * (n - n_hard)
    rng.shuffle(kinds)
    out = []
    for i, hard in enumerate(kinds):
        if hard:
            text, extra = HARD[i % hard_kinds]
        else:
            text, extra = EASY[i % len(EASY)], {}
        body = {"messages": [{"role": "user", "content": f"(request {i}) {text}"}], **extra}
        out.append((hard, body))
    return out


async def run_policy(
    client: httpx.AsyncClient,
    policy: str,
    items: list[tuple[bool, dict[str, Any]]],
    concurrency: int,
    quality: dict[str, float],
) -> Result:
    result = Result(policy)
    gate = asyncio.Semaphore(concurrency)

    async def one(hard: bool, body: dict[str, Any]) -> None:
        async with gate:
            started = time.perf_counter()
            r = await client.post("/v1/chat/completions", json={**body, "model": policy})
            elapsed = time.perf_counter() - started
        if r.status_code != 200:
            raise RuntimeError(f"{policy}: {r.status_code} {r.text[:200]}")
        model = r.headers["x-pareto-model"]
        result.costs.append(float(r.headers["x-pareto-cost-usd"]))
        result.latencies.append(elapsed)
        result.models[model] = result.models.get(model, 0) + 1
        dep = r.headers["x-pareto-deployment"]
        result.deployments[dep] = result.deployments.get(dep, 0) + 1
        if "x-pareto-escalation-reason" in r.headers:
            result.escalated += 1
        if hard:
            result.hard += 1
            result.hard_strong += quality[model] >= STRONG_QUALITY

    await asyncio.gather(*(one(hard, body) for hard, body in items))
    return result


async def ttft(client: httpx.AsyncClient, policy: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    first: float | None = None
    async with client.stream(
        "POST", "/v1/chat/completions", json={**body, "model": policy, "stream": True}
    ) as r:
        async for line in r.aiter_lines():  # read to the end: a dropped stream is noise
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("no content chunk")
    return first


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--hard", type=float, default=0.3, help="share of hard requests")
    parser.add_argument("--sweep-requests", type=int, default=200)
    parser.add_argument("--sweep-concurrency", type=int, default=100, help="costs only")
    args = parser.parse_args()

    settings = Settings(
        config=ROOT / "config" / "demo.yaml", watch_config=False, log_level="warning"
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=120,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.05)
    try:
        catalog = app.state.gateway.catalog
        quality = {name: m.quality for name, m in catalog.models.items()}
        limits = httpx.Limits(max_connections=max(args.concurrency, args.sweep_concurrency) + 8)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits)
        items = workload(args.requests, args.hard)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"(machine load average at start: {load}; latencies include queueing on a shared box)\n"
        )
        print(
            f"## Part 1: {args.requests} requests, {args.hard:.0%} hard, concurrency "
            f"{args.concurrency}, config/demo.yaml (real-time simulated latencies)\n"
        )
        print(
            "| policy | USD per 1k requests | escalation rate | p50 s | p99 s "
            "| hard → strong model | served by |"
        )
        print("|---|---|---|---|---|---|---|")
        results: dict[str, Result] = {}
        for policy in ("cascade", "cascade-judged", "gpt-5.5", "auto"):
            policy_items = items
            if policy == "cascade-judged":  # script the judge: easy answers pass, hard fail
                policy_items = [
                    (h, _with_suffix(b, f" [sim:grade={3 if h else 9}@llama-3.1-8b@groq]"))
                    for h, b in items
                ]
            result = await run_policy(client, policy, policy_items, args.concurrency, quality)
            results[policy] = result
            print(result.row())

        # -- Part 2: break-even ------------------------------------------------------------
        cheap_prices = ", ".join(
            f"{d} ${catalog.by_id[d].price_input * 1e6:g}/${catalog.by_id[d].price_output * 1e6:g}"
            for d in CHEAP_DEPLOYMENTS
        )
        strong = catalog.by_id["gpt-5.5@openai"]
        probe = workload(50, 0.0, seed=11)
        fan = args.sweep_concurrency
        r_cheap = await run_policy(client, "gpt-oss-120b", probe, fan, quality)
        r_strong = await run_policy(client, "gpt-5.5", probe, fan, quality)
        c1 = statistics.fmean(r_cheap.costs)
        c2 = statistics.fmean(r_strong.costs)
        print(
            "\n## Part 2: break-even escalation rate\n\n"
            f"Prices per M in/out: {cheap_prices}; {strong.id} ${strong.price_input * 1e6:g}/"
            f"${strong.price_output * 1e6:g}. Measured per request on this workload: "
            f"cheap tier c1 = ${c1:.6f} (served by {r_cheap.deployments}), strong tier "
            f"c2 = ${c2:.6f}.\n"
            f"Cascade cost per request = c1 + e*c2, always-strong = c2 -> break-even "
            f"e* = 1 - c1/c2 = {1 - c1 / c2:.2%}.\n"
        )
        c_auto = statistics.fmean(results["auto"].costs)
        print(
            f"Against the predictive policy (auto, ${c_auto:.6f} per request in part 1): "
            f"cascade = c1 + e*c2 = c_auto at e* = (c_auto - c1)/c2 = {(c_auto - c1) / c2:.2%}.\n"
        )
        print(
            "| escalation rate | cascade USD per 1k | always-strong USD per 1k | cascade / strong |"
        )
        print("|---|---|---|---|")
        points: list[tuple[float, float]] = []
        for share in (0.0, 0.3, 0.6, 0.9, 0.97, 0.99, 1.0):
            # Hard = low-confidence answers only: same answer length as easy ones, so the
            # measurement is comparable with the analytic c1, c2.
            sweep = workload(args.sweep_requests, share, seed=13, hard_kinds=1)
            rc = await run_policy(client, "cascade", sweep, fan, quality)
            rs = await run_policy(client, "gpt-5.5", sweep, fan, quality)
            cc, cs = sum(rc.costs) / len(rc.costs), sum(rs.costs) / len(rs.costs)
            e = rc.escalated / len(rc.costs)
            points.append((e, cc / cs))
            print(f"| {e:.1%} | {cc * 1000:.4f} | {cs * 1000:.4f} | {cc / cs:.3f} |")
        crossing = _crossing(points)
        print(
            "\nMeasured crossing (cascade / strong = 1, linear interpolation): "
            + (
                f"e = {crossing:.2%}"
                if crossing is not None
                else "not reached (cascade always cheaper)"
            )
        )

        # -- Part 3: streaming TTFT --------------------------------------------------------
        easy_body = {"messages": [{"role": "user", "content": "(stream) Say hello."}]}
        hard_body = {
            "messages": [
                {"role": "user", "content": "(stream) Prove it. " + weak("low_confidence")}
            ]
        }
        print("\n## Part 3: streaming time to first content chunk (s, median of 5)\n")
        print("| request | cascade (buffer) | always gpt-5.5 | gpt-oss-120b alone |")
        print("|---|---|---|---|")
        for label, body in (("easy", easy_body), ("hard (escalates)", hard_body)):
            row = []
            for policy in ("cascade", "gpt-5.5", "gpt-oss-120b"):
                samples = [await ttft(client, policy, _unique(body, k)) for k in range(5)]
                row.append(f"{statistics.median(samples):.2f}")
            print(f"| {label} | " + " | ".join(row) + " |")
        await client.aclose()
    finally:
        server.should_exit = True
        await serving


def _with_suffix(body: dict[str, Any], suffix: str) -> dict[str, Any]:
    message = dict(body["messages"][0])
    message["content"] += suffix
    return {**body, "messages": [message]}


def _unique(body: dict[str, Any], k: int) -> dict[str, Any]:
    return _with_suffix(body, f" #{k}")


def _crossing(points: list[tuple[float, float]]) -> float | None:
    for (e0, r0), (e1, r1) in zip(points, points[1:], strict=False):
        if r0 < 1 <= r1 and r1 != r0:
            return e0 + (1 - r0) * (e1 - e0) / (r1 - r0)
    return None


if __name__ == "__main__":
    asyncio.run(main())
