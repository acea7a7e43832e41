"""Small synthetic routing datasets written to a temp dir (the real data stays out of tests).

Two-model set: "hard" prompts (topic words about proofs) are solved by the strong model only;
"easy" ones (greetings, trivia) by both; a few are solved by neither. A router that reads the
words can learn who wins; one that does not cannot.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

HARD = ["prove", "theorem", "lemma", "integral", "eigenvalue", "induction", "topology"]
EASY = ["hello", "capital", "colour", "weather", "recipe", "holiday", "movie"]
FILLER = ["please", "the", "a", "of", "explain", "what", "is", "about", "short", "answer"]


def _prompt(rng: random.Random, words: list[str]) -> str:
    body = [rng.choice(words) for _ in range(3)] + [rng.choice(FILLER) for _ in range(6)]
    rng.shuffle(body)
    return " ".join(body) + "?"


def two_model_rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.4:
            text, strong, weak = _prompt(rng, HARD), 1.0, 0.0
        elif kind < 0.9:
            text, strong, weak = _prompt(rng, EASY), 1.0, 1.0
        else:
            text, strong, weak = _prompt(rng, FILLER), 0.0, 0.0
        rows.append(
            {
                "id": f"syn-{i}",
                "messages": [{"role": "user", "content": text}],
                "scores": {"big": strong, "small": weak},
                "output_tokens": {"big": 10, "small": 10},
                "tags": {"source": "synthetic"},
                "extra": "ignored",
            }
        )
    return rows


TWO_MODEL_PRICES = {
    "big": {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 30.0, "source": "test"},
    "small": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 0.5, "source": "test"},
}


def write_dataset(
    folder: Path, name: str, rows: list[dict[str, Any]], prices: dict[str, Any], gz: bool = False
) -> Path:
    """``<folder>/<name>.jsonl[.gz]`` plus ``<family>-models.json``."""
    family = name.split("-")[0]
    (folder / f"{family}-models.json").write_text(json.dumps(prices))
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        path = folder / f"{name}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path = folder / f"{name}.jsonl"
        path.write_text(text)
    return path


THREE_MODEL_PRICES = {
    "big": {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 30.0, "source": "test"},
    "mid": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 3.0, "source": "test"},
    "small": {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1, "source": "test"},
}


def three_model_rows(n: int, seed: int = 2) -> list[dict[str, Any]]:
    """Hard prompts: only big; medium ("explain"-ish topic words): big and mid; easy: all."""
    rng = random.Random(seed)
    medium = ["summarise", "compare", "translate", "outline", "classify", "extract", "rewrite"]
    rows = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.3:
            text, s = _prompt(rng, HARD), {"big": 1.0, "mid": 0.0, "small": 0.0}
        elif kind < 0.6:
            text, s = _prompt(rng, medium), {"big": 1.0, "mid": 1.0, "small": 0.0}
        else:
            text, s = _prompt(rng, EASY), {"big": 1.0, "mid": 1.0, "small": 1.0}
        rows.append(
            {
                "id": f"tri-{i}",
                "messages": [{"role": "user", "content": text}],
                "scores": s,
                "output_tokens": {"big": 50, "mid": 50, "small": 50},
                "tags": {"source": "synthetic"},
            }
        )
    return rows
