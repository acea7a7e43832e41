"""Token estimate vs a real tokenizer, on the shared routing data (not collected by pytest).

    python tests/benchmarks/bench_token_estimate.py [--data ../shared/data/routing]

The content heuristic estimates prompt tokens as ``ceil(chars / 4)`` per message (+4 tokens of
message overhead; ``app/routing/features.py``). This compares the per-message content estimate
with OpenAI's real BPE tokenizers (``o200k_base``: GPT-4o / GPT-5 / gpt-oss family;
``cl100k_base``: GPT-4 / GPT-3.5), counted offline by ``bpe-openai``, a PyPI wheel that ships
the vocabularies inside it (no hub download at run time).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from pathlib import Path

import bpe_openai

ROOT = Path(__file__).resolve().parents[2]
# shared/ sits beside the repository (a worktree's is two levels up, under /work).
DEFAULT_DATA = next(
    (p / "shared" / "data" / "routing" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
    ROOT.parent / "shared" / "data" / "routing",
)


def texts(path: Path) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.extend(m["content"] for m in row["messages"])
    return out


def report(name: str, contents: list[str], encoding: str) -> None:
    enc = bpe_openai.get_encoding(encoding)
    true = [len(enc.encode(t)) for t in contents]
    est = [(len(t) + 3) // 4 for t in contents]
    rel = [(e - t) / t for e, t in zip(est, true, strict=True) if t]
    abs_rel = sorted(abs(r) for r in rel)
    print(
        f"{name:<5} {encoding:<11} n={len(contents):>6}  total est/true {sum(est) / sum(true):.3f}"
        f"  mean signed {statistics.fmean(rel) * 100:+6.1f}%"
        f"  mean |err| {statistics.fmean(abs_rel) * 100:5.1f}%"
        f"  median |err| {abs_rel[len(abs_rel) // 2] * 100:5.1f}%"
        f"  p90 |err| {abs_rel[int(0.9 * len(abs_rel))] * 100:5.1f}%"
        f"  chars/token {sum(map(len, contents)) / sum(true):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    for name in ("crux", "mmlu"):
        contents = texts(args.data / f"{name}.jsonl.gz")
        for encoding in ("o200k_base", "cl100k_base"):
            report(name, contents, encoding)


if __name__ == "__main__":
    main()
