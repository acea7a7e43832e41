"""``pareto eval``: score routers on routing datasets, only on rows they were not trained on.

Routers: ``heuristic`` (the gateway's default routing: catalog quality per model, content
heuristic floors) and ``learned`` (the same routing with the learned scorer's per-row
predictions as ``q``). The learned router is either cross-fitted here (k folds: every row is
predicted by a model trained on the other folds) or loaded from a ``pareto train`` file, in
which case only the rows of its fixed held-out split are scored (all rows of a dataset it was
not trained on).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from app.errors import RouterFileError
from app.evaluation.baselines import Baselines, arrays, baselines
from app.evaluation.dataset import Dataset, load_dataset
from app.evaluation.examples import from_dataset
from app.evaluation.gateway_router import (
    DEFAULT_POLICIES,
    GatewayDecider,
    build_catalog,
    catalog_config,
)
from app.evaluation.progress import Progress
from app.evaluation.report import to_json
from app.evaluation.runner import RouterResult, run
from app.evaluation.trainer import example_id
from app.evaluation.training import TrainConfig, cross_val_predict, fold_of, in_holdout, matrix
from app.routing.learned import DEFAULT_DIM, LearnedScorer, featurize

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """What ``pareto eval`` was asked for."""

    routers: tuple[str, ...] = ("heuristic", "learned")
    router_file: Path | None = None
    folds: int = 5
    seed: int = 0
    limit: int | None = None
    policies_file: Path = DEFAULT_POLICIES
    policy: str = "auto"
    floor: str | None = None
    dim: int = DEFAULT_DIM
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True, slots=True)
class DatasetEval:
    """Everything ``pareto eval`` reports for one dataset."""

    name: str
    rows: int
    split: str
    baselines: Baselines
    results: tuple[RouterResult, ...]
    doc: dict[str, Any]


def _limit(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or limit >= len(dataset.rows):
        return dataset
    ranked = sorted(
        range(len(dataset.rows)),
        key=lambda i: zlib.crc32(f"sample:{seed}:{dataset.rows[i].id}".encode()),
    )
    return dataset.subset(sorted(ranked[:limit]))


def _file_rows(dataset: Dataset, scorer: LearnedScorer, path: Path) -> tuple[list[int], str]:
    trained_on = scorer.meta.get("trained_on") or []
    if dataset.name not in trained_on:
        return list(range(len(dataset.rows))), f"all rows ({path.name} was not trained on them)"
    rule = scorer.meta.get("holdout") or {}
    fraction, seed = float(rule.get("fraction", 0.0)), int(rule.get("seed", 0))
    rows = [
        i
        for i, r in enumerate(dataset.rows)
        if in_holdout(example_id(dataset, r.id), fraction, seed)
    ]
    if not rows:
        raise RouterFileError(
            f"{path} was trained on every row of {dataset.name}; retrain with --holdout F "
            "(e.g. 0.2) to keep rows out, or evaluate on another dataset"
        )
    return rows, f"held-out rows of {path.name} (fixed split: fraction {fraction}, seed {seed})"


def _file_predictions(dataset: Dataset, scorer: LearnedScorer) -> Floats:
    """Per-row predictions in the dataset's model order; NaN for models the file lacks."""
    out = np.full((len(dataset.rows), len(dataset.models)), np.nan)
    cols = [(j, scorer.index[m]) for j, m in enumerate(dataset.models) if m in scorer.index]
    cache: dict[str, int] = {}
    for i, row in enumerate(dataset.rows):
        q = scorer.predict_features(featurize(row.messages, scorer.dim, cache))
        for j, k in cols:
            out[i, j] = q[k]
    return out


def _cv_predictions(
    dataset: Dataset, options: EvalOptions, stream: TextIO | None, show: bool | None
) -> Floats:
    """Out-of-fold predictions: each row by a model trained on the other folds only."""
    examples = from_dataset(dataset, options.dim)
    x = matrix([e.features for e in examples], options.dim)
    y = np.array([row.scores for row in dataset.rows], dtype=np.float64)
    folds = fold_of([e.id for e in examples], options.folds, options.seed)
    bar = Progress(f"{dataset.name}: learned, CV fits", options.folds, stream, show)
    oof = cross_val_predict(x, y, np.ones_like(y), folds, options.train, lambda d, t: bar.advance())
    bar.close()
    return oof


def evaluate_dataset(
    path: Path,
    options: EvalOptions,
    models_path: Path | None = None,
    stream: TextIO | None = None,
    show_progress: bool | None = None,
) -> DatasetEval:
    """Evaluate the requested routers on one dataset file."""
    dataset = _limit(load_dataset(path, models_path), options.limit, options.seed)
    split = "all rows"
    learned_note = ""
    file_q: Floats | None = None
    if options.router_file is not None and "learned" in options.routers:
        scorer = LearnedScorer.load(options.router_file)
        rows, split = _file_rows(dataset, scorer, options.router_file)
        dataset = dataset.subset(rows)
        file_q = _file_predictions(dataset, scorer)
        learned_note = f"learned router from {options.router_file}"
    elif "learned" in options.routers:
        split = f"all rows, learned router cross-fitted ({options.folds}-fold, seed {options.seed})"
        learned_note = f"{options.folds}-fold out-of-fold predictions"
    a = arrays(dataset)
    base = baselines(dataset, a)
    quality = {m: float(a.quality[:, j].mean()) for j, m in enumerate(dataset.models)}
    catalog = build_catalog(
        catalog_config(dataset, quality, options.policies_file, options.policy, options.floor)
    )
    results = []
    for name in options.routers:
        predictions = None
        if name == "learned":
            predictions = (
                file_q
                if file_q is not None
                else _cv_predictions(dataset, options, stream, show_progress)
            )
        elif name != "heuristic":
            raise ValueError(f"unknown router {name!r}; use heuristic or learned")
        decider = GatewayDecider(name, dataset, catalog, predictions)
        bar = Progress(f"{dataset.name}: {name}", a.n, stream, show_progress)
        results.append(run(decider, a, base, bar))
        bar.close()
    doc = to_json(dataset.name, a.n, split, base, results)
    doc["settings"] = {
        "policy": options.policy,
        "policies_file": str(options.policies_file),
        "floor": options.floor,
        "seed": options.seed,
        "folds": options.folds,
        "limit": options.limit,
        "learned": learned_note,
        "catalog_quality": {m: 100 * q for m, q in quality.items()},
    }
    return DatasetEval(dataset.name, a.n, split, base, tuple(results), doc)
