"""Training examples from every source ``pareto train`` reads: routing datasets (every model
labelled) and gateway feedback logs (the one model that served a request, with its score)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import DatasetError
from app.evaluation.dataset import Dataset, iter_jsonl, load_dataset
from app.routing.learned import SparseFeatures, featurize


@dataclass(frozen=True, slots=True)
class Example:
    """One request's hashed features and the quality labels known for it."""

    id: str
    source: str
    features: SparseFeatures
    labels: dict[str, float]


def is_feedback_file(path: Path) -> bool:
    """Feedback logs carry ``hashed`` features instead of ``messages``."""
    for obj in iter_jsonl(path):
        return "hashed" in obj and "messages" not in obj
    return False


def from_dataset(dataset: Dataset, dim: int) -> list[Example]:
    """Every row, every model labelled."""
    cache: dict[str, int] = {}
    return [
        Example(
            id=f"{dataset.name}/{row.id}",
            source=dataset.name,
            features=featurize(row.messages, dim, cache),
            labels=dict(zip(dataset.models, row.scores, strict=True)),
        )
        for row in dataset.rows
    ]


def from_feedback(path: Path, dim: int) -> list[Example]:
    """Feedback records written by ``POST /v1/feedback`` (features hashed at request time)."""
    out = []
    for lineno, obj in enumerate(iter_jsonl(path), 1):
        try:
            hashed = obj["hashed"]
            if int(hashed["dim"]) != dim:
                raise DatasetError(
                    f"{path}:{lineno}: features hashed into {hashed['dim']} buckets, the "
                    f"router uses {dim}; train with --dim {hashed['dim']}"
                )
            features = SparseFeatures(
                np.asarray(hashed["indices"], dtype=np.int64),
                np.asarray(hashed["values"], dtype=np.float32),
            )
            out.append(
                Example(
                    id=f"feedback/{obj['request_id']}",
                    source=f"feedback:{path.name}",
                    features=features,
                    labels={str(obj["model"]): float(obj["score"])},
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{path}:{lineno}: a feedback record needs request_id, model, score and "
                f"hashed {{dim, indices, values}}"
            ) from exc
    return out


def load_sources(
    paths: list[Path], dim: int, models_path: Path | None = None
) -> tuple[list[Dataset], list[Example]]:
    """Datasets (kept for metrics and calibration) and all training examples."""
    datasets: list[Dataset] = []
    examples: list[Example] = []
    for path in paths:
        if is_feedback_file(path):
            examples.extend(from_feedback(path, dim))
        else:
            dataset = load_dataset(path, models_path)
            datasets.append(dataset)
            examples.extend(from_dataset(dataset, dim))
    return datasets, examples
