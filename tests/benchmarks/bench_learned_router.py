"""Per-decision cost of the learned scorer (featurize + predict) on real prompts.

Run: ``/work/venv/bin/python tests/benchmarks/bench_learned_router.py [DATASET] [ROUTER]``.
Without a router file it trains a throwaway one on 500 rows (the cost does not depend on the
weights). Prints p50/p99 over every prompt of the dataset, and for long synthetic prompts.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.evaluation.dataset import load_dataset
from app.routing.learned import LearnedScorer

DEFAULT = Path("/work/shared/data/routing/mmlu.jsonl.gz")


def _scorer(dataset: Path, router: Path | None) -> LearnedScorer:
    if router is not None:
        return LearnedScorer.load(router)
    from app.evaluation.trainer import TrainOptions, train
    from app.evaluation.training import TrainConfig

    ds = load_dataset(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / f"{ds.name}.jsonl"
        import json

        small.write_text(
            "".join(
                json.dumps(
                    {
                        "id": r.id,
                        "messages": list(r.messages),
                        "scores": dict(zip(ds.models, r.scores, strict=True)),
                        "output_tokens": dict(zip(ds.models, r.output_tokens, strict=True)),
                    }
                )
                + "\n"
                for r in ds.rows[:500]
            )
        )
        models = dataset.parent / f"{ds.name.split('-')[0]}-models.json"
        result = train(
            [small],
            TrainOptions(folds=0, config=TrainConfig(steps=20)),
            models,
            show_progress=False,
        )
        return result.scorer


def _percentiles(samples: list[float]) -> str:
    samples.sort()
    p50 = samples[len(samples) // 2]
    p99 = samples[int(len(samples) * 0.99)]
    mean = statistics.mean(samples)
    return f"p50 {p50 * 1e6:7.1f} µs   p99 {p99 * 1e6:7.1f} µs   mean {mean * 1e6:7.1f} µs"


def main() -> None:
    dataset = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    router = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    scorer = _scorer(dataset, router)
    ds = load_dataset(dataset)
    prompts = [list(r.messages) for r in ds.rows]
    for m in prompts[:200]:
        scorer.predict(m)  # warm up
    samples = []
    for messages in prompts:
        t = time.perf_counter()
        scorer.predict(messages)
        samples.append(time.perf_counter() - t)
    chars = statistics.mean(sum(len(m["content"]) for m in p) for p in prompts)
    print(
        f"{ds.name}: {len(prompts)} prompts (mean {chars:.0f} chars), {len(scorer.models)} "
        f"models: {_percentiles(samples)}"
    )
    word = "analyse the following function and explain its complexity "
    for tokens in (1_000, 10_000, 100_000):
        text = (word * (tokens * 4 // len(word) + 1))[: tokens * 4]
        msg = [{"role": "user", "content": text}]
        long = []
        for _ in range(200):
            t = time.perf_counter()
            scorer.predict(msg)
            long.append(time.perf_counter() - t)
        print(f"~{tokens:>6}-token prompt: {_percentiles(long)}")


if __name__ == "__main__":
    main()
