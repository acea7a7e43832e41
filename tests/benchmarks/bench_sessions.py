"""Benchmark: session stickiness on vs off on the demo catalog, and what Redis adds per request.

Run from the repo root (needs Redis at 127.0.0.1:6379 for part 2; keys use a unique prefix
and are deleted afterwards):

    /work/venv/bin/python tests/benchmarks/bench_sessions.py [--sessions 40] [--turns 10]

Part 1 replays the same multi-turn chat workload (each conversation mixes code, maths,
summaries and small talk, resending its history like a chat UI) through the in-process
gateway on ``config/demo.yaml`` with instant simulated deployments, once with stickiness on
and once with ``PARETO_SESSIONS_ENABLED=false``, and prints total cost, the share of prompt
tokens served from the provider cache, and deployment switches per session.

Part 2 times the session layer's own work per request (``lookup`` + ``remember``) against
the real Redis and against the in-memory store, and prints p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.fastredis import FastRedis  # noqa: E402
from app.main import create_app  # noqa: E402
from app.sessions import build_sessions  # noqa: E402
from app.settings import Settings  # noqa: E402

SYSTEMS = [
    "You are a senior engineer helping a colleague ship a billing service. Be precise. " * 6,
    "You are a friendly tutor for a first-year university student. Explain step by step. " * 6,
    "You are an assistant for a small travel agency. Keep answers practical and short. " * 6,
]
TURNS = [
    "Write a Python function that parses ISO-8601 durations like PT1H30M into seconds, "
    "with type hints and a docstring:\n```python\ndef parse_duration(text: str) -> int:\n```",
    "Thanks, that helps! How are you finding the day so far?",
    "Solve for x: 3x^2 - 12x + 9 = 0, and prove the roots are real using the discriminant.",
    "Summarize the following meeting notes in three bullet points: the team agreed to move "
    "the launch to May, marketing needs two more weeks for the campaign, and QA found four "
    "blocking bugs in checkout that must be fixed before any release candidate is cut.",
    "Now refactor the function to raise ValueError on bad input and add pytest unit tests:\n"
    "```python\nimport pytest\n```",
    "Translate into French: 'The meeting is moved to Thursday at ten.'",
    "Compute the integral of x * e^(2x) dx and check it by differentiating.",
    "Great. Any tips for staying focused in the afternoon?",
    "Extract every date and amount from this text as JSON: 'Paid $120 on 3 March, "
    "$75.50 on 9 April and $300 on 1 May.'",
    "Write a SQL query that returns the top five customers by revenue in 2025, with ties.",
    "Explain the difference between a process and a thread in two sentences.",
    "Write a short poem about routers that keep their caches warm.",
]


def attachment(s: int) -> str:
    """A ~3,000-token source file the conversation is about (different per session)."""
    lines = [
        f"def handler_{s}_{i}(event: dict, retries: int = {i % 5}) -> dict:\n"
        f"    # step {i}: validate, price and settle invoice batch {s * 100 + i}\n"
        f"    total = sum(item['amount'] for item in event['items'][:{i + 3}])\n"
        f"    return {{'status': 'ok', 'total': total, 'batch': {s * 100 + i}}}\n"
        for i in range(60)
    ]
    return "".join(lines)


@dataclass
class Totals:
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    switches: int = 0
    requests: int = 0
    failures: int = 0
    sessions: int = 0
    deployments: dict[str, int] = field(default_factory=dict)
    session_states: dict[str, int] = field(default_factory=dict)
    quality_sum: float = 0.0


def demo_config(tmp: Path, realtime: bool) -> Path:
    """config/demo.yaml, optionally with instant simulated deployments (same prices, caches)."""
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    demo["include"] = [str(ROOT / "config" / p) for p in demo.get("include", [])]
    for dep in demo["deployments"].values():
        dep.setdefault("simulation", {})["realtime"] = realtime
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    return path


async def replay(
    config: Path, sessions: int, turns: int, sticky: bool, model: str, attach: bool
) -> Totals:
    app = create_app(
        Settings(config=config, watch_config=False, sessions_enabled=sticky, log_level="warning")
    )
    totals = Totals(sessions=sessions)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", timeout=120
        ) as client:
            await asyncio.gather(
                *(conversation(client, s, turns, model, attach, totals) for s in range(sessions))
            )
        models = app.state.gateway.catalog.models
        totals.quality_sum = sum(
            models[dep.split("@")[0]].quality * n for dep, n in totals.deployments.items()
        )
    return totals


async def conversation(
    client: httpx.AsyncClient, s: int, turns: int, model: str, attach: bool, totals: Totals
) -> None:
    """One chat mixing task types; with ``attach`` the first turn pastes a source file."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEMS[s % len(SYSTEMS)] + f" (desk {s})"}
    ]
    last: str | None = None
    for t in range(turns):
        prompt = TURNS[(s * 5 + t) % len(TURNS)]
        if t == 0 and attach:
            prompt = (
                "Here is the module we will work on today:\n```python\n"
                + attachment(s)
                + "```\nRead it and tell me what it does."
            )
        messages.append({"role": "user", "content": prompt})
        r = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": messages},
            headers={"x-pareto-session-id": f"bench-{s}"},
        )
        totals.requests += 1
        if r.status_code != 200:
            totals.failures += 1
            messages.pop()
            continue
        body = r.json()
        messages.append(body["choices"][0]["message"])
        usage = body["usage"]
        totals.prompt_tokens += usage["prompt_tokens"]
        totals.cached_tokens += usage["prompt_tokens_details"]["cached_tokens"]
        totals.cost_usd += float(r.headers["x-pareto-cost-usd"])
        dep = r.headers["x-pareto-deployment"]
        state = r.headers.get("x-pareto-session", "off")
        totals.session_states[state] = totals.session_states.get(state, 0) + 1
        totals.deployments[dep] = totals.deployments.get(dep, 0) + 1
        if last is not None and dep != last:
            totals.switches += 1
        last = dep


def report(name: str, t: Totals) -> None:
    share = t.cached_tokens / t.prompt_tokens if t.prompt_tokens else 0.0
    top = sorted(t.deployments.items(), key=lambda kv: -kv[1])[:4]
    print(
        f"  {name:<14} cost ${t.cost_usd:.4f}  cached share {share:6.1%}  "
        f"switches/session {t.switches / t.sessions:.2f}  failures {t.failures}/{t.requests}  "
        f"mean model quality {t.quality_sum / max(1, t.requests - t.failures):.1f}"
    )
    print(f"  {'':<14} deployments: " + ", ".join(f"{d} ×{n}" for d, n in top))
    states = sorted(t.session_states.items(), key=lambda kv: -kv[1])
    print(f"  {'':<14} x-pareto-session: " + ", ".join(f"{s} ×{n}" for s, n in states))


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def store_latency(n: int) -> None:
    prefix = f"pareto-bench-{uuid.uuid4().hex[:8]}:"
    redis = aioredis.Redis.from_url(
        "redis://127.0.0.1:6379/0", socket_timeout=0.05, socket_connect_timeout=0.05
    )
    hot = FastRedis("redis://127.0.0.1:6379/0", timeout_s=0.05)
    settings = Settings(session_key_prefix=prefix, redis_timeout_s=0.05)
    try:
        for name, client in (("memory", None), ("redis", hot)):
            sessions = build_sessions(settings, client)
            samples: list[float] = []
            for i in range(n):
                # 1 in 10 requests starts a session (lookup miss + write); the rest continue one.
                sid = f"s-{i // 10}"
                body = {
                    "model": "auto",
                    "messages": [
                        {"role": "user", "content": "hello"},
                        {"role": "assistant", "content": "hi"},
                        {"role": "user", "content": f"turn {i}"},
                    ],
                }
                headers = {"x-pareto-session-id": sid}
                start = time.perf_counter()
                found = await sessions.lookup(body, headers)
                await sessions.remember(found, "gpt-oss-120b@groq", "auto")
                samples.append((time.perf_counter() - start) * 1e6)
            print(
                f"  {name:<7} lookup+remember per request: p50 {pct(samples, 0.5):7.1f} µs  "
                f"p99 {pct(samples, 0.99):7.1f} µs  mean {statistics.fmean(samples):7.1f} µs "
                f"(n={n})"
            )
    finally:
        keys = [k async for k in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await hot.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--model", default="auto", help="policy or model to request")
    parser.add_argument("--latency-samples", type=int, default=5000)
    parser.add_argument(
        "--instant",
        action="store_true",
        help="no simulated TTFT/decode sleeps (faster, but live latency estimates drop to ~0)",
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        help="the first turn pastes a ~3,000-token source file (long shared prefix)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(Path(tmp), realtime=not args.instant)
        print(
            f"1) {args.sessions} concurrent sessions × {args.turns} turns on the demo catalog, "
            f"model={args.model!r}, {'instant' if args.instant else 'real-time'} simulation"
            + (", file attached on turn 1" if args.attach else "")
        )
        on = await replay(config, args.sessions, args.turns, True, args.model, args.attach)
        off = await replay(config, args.sessions, args.turns, False, args.model, args.attach)
        report("sticky", on)
        report("per-turn", off)
        if off.cost_usd:
            print(f"  stickiness saves {1 - on.cost_usd / off.cost_usd:.1%} of the cost")
    print("2) session layer latency per request")
    await store_latency(args.latency_samples)


if __name__ == "__main__":
    asyncio.run(main())
