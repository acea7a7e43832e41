"""Routing decision speed: features + plan on a 50-deployment catalog (not collected by pytest).

    python tests/benchmarks/bench_routing.py [--iterations N]

Prints p50/p99 of one routing decision (content heuristic + policy + Pareto/utility plan, the
same ``Router.route`` call the gateway makes) for a 1k-token prompt, and the heuristic alone at
1k / 10k / 100k tokens (it should grow linearly, or better). Targets: p50 <= 50 µs,
p99 <= 200 µs for the decision.

Work per decision, independent of load (instructions; the difference of two runs / N)::

    OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 valgrind --tool=cachegrind \
        python tests/benchmarks/bench_routing.py --loop N   # and --loop 0
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.catalog import load_catalog  # noqa: E402
from app.routing import Router  # noqa: E402

PARAGRAPH = (
    "The service ingests events from several regions, normalises their timestamps and writes "
    "them to a partitioned table. Operators reported that late events are sometimes dropped "
    "when a partition is compacted while a backfill is running, and that retries can double "
    "count a batch. Explain what could cause this and how to make the pipeline idempotent. "
)


def catalog_50(tmp: Path) -> Path:
    """10 models x 5 providers = 50 simulated deployments, spread over the quality range."""
    models: dict[str, Any] = {}
    deployments: dict[str, Any] = {}
    for m in range(10):
        name = f"model-{m}"
        quality = 20 + 4.5 * m
        models[name] = {
            "quality": quality,
            "quality_by_category": {"code": quality + 2, "math": quality - 1, "chat": quality},
            "context_window": 128000 if m % 3 else 1000000,
            "capabilities": ["tools", "json"] + (["vision"] if m % 2 else []),
        }
        for p in range(5):
            price = 0.05 * (1.6**m) * (1 + 0.2 * p)
            deployments[f"{name}@provider{p}"] = {
                "kind": "simulated",
                "price": {"input": price, "output": price * 4, "cached_input": price / 10},
                "ttft_s": 0.2 + 0.1 * m + 0.05 * p,
                "decode_tps": 3000 / (1 + m) / (1 + 0.3 * p),
            }
    policies = Path(__file__).resolve().parents[2] / "config" / "policies.yaml"
    import yaml

    path = tmp / "catalog50.yaml"
    path.write_text(
        yaml.safe_dump({"include": [str(policies)], "models": models, "deployments": deployments})
    )
    return path


def body_of(tokens: int) -> dict[str, Any]:
    text = (PARAGRAPH * (tokens * 4 // len(PARAGRAPH) + 1))[: tokens * 4]
    return {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a careful senior engineer."},
            {"role": "user", "content": text},
        ],
    }


def timings_us(fn: Callable[[], object], iterations: int) -> list[float]:
    for _ in range(min(2000, iterations)):
        fn()
    out = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(iterations):
            t0 = clock()
            fn()
            out.append((clock() - t0) / 1000)
    finally:
        gc.enable()
    out.sort()
    return out


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument(
        "--loop",
        type=int,
        default=None,
        metavar="N",
        help="only run N decisions, untimed (for profilers: py-spy, valgrind --tool=cachegrind)",
    )
    args = parser.parse_args()
    import tempfile

    # How fast this Python is right now (shared CI boxes vary a lot): a quiet modern x86 core
    # runs 1M iterations of an empty for-loop in ~15-20 ms.
    t0 = time.perf_counter()
    for _ in range(1_000_000):
        pass
    print(f"reference: 1M empty loop iterations in {(time.perf_counter() - t0) * 1000:.0f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        catalog = load_catalog(catalog_50(Path(tmp)))
    router = Router(catalog)
    assert len(catalog.deployments) == 50
    body = body_of(1000)
    if args.loop is not None:
        for _ in range(args.loop):
            router.route(catalog, body, {})
        return
    plan = router.route(catalog, body, {})
    print(
        f"catalog: {len(catalog.deployments)} deployments; 1k-token prompt -> "
        f"{plan.primary.deployment.id} ({plan.reason})"
    )
    decision = timings_us(lambda: router.route(catalog, body, {}), args.iterations)
    print(
        f"routing decision (features + policy + plan), 1k tokens: "
        f"p50 {pct(decision, 0.5):.1f} µs  p99 {pct(decision, 0.99):.1f} µs  "
        f"mean {statistics.fmean(decision):.1f} µs  (n={len(decision)})"
    )
    features = router.table  # noqa: F841 - keep the table warm
    for tokens in (1000, 10000, 100000):
        b = body_of(tokens)
        n = max(200, args.iterations // (tokens // 1000))
        t = timings_us(lambda b=b: router.features(b), n)
        print(
            f"heuristic only, {tokens:>6} tokens: p50 {pct(t, 0.5):8.1f} µs  "
            f"p99 {pct(t, 0.99):8.1f} µs  ({pct(t, 0.5) / tokens * 1000:.2f} µs per 1k tokens)"
        )


if __name__ == "__main__":
    main()
