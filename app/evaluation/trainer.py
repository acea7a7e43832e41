"""``pareto train``: cross-validate, calibrate and fit the learned scorer, then save it.

Held-out metrics are computed on out-of-fold predictions (every row scored by a fold model
that never saw it), with the scorer used *directly*: for two-model datasets the router score
is the predicted quality gap ``q̂_strong − q̂_weak`` (RouteLLM's APGR / CPT); for many-model
datasets each setting ``λ`` picks ``argmax_m 100·q̂_m − λ·cost_m`` per row (the gateway's
utility without floors or latency). ``pareto eval`` runs the full gateway routing instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from app.evaluation import envelope, routellm
from app.evaluation.baselines import Arrays, arrays, baselines, strong_weak
from app.evaluation.dataset import Dataset
from app.evaluation.examples import Example, load_sources
from app.evaluation.progress import Progress
from app.evaluation.training import (
    Matrix,
    TrainConfig,
    cross_val_predict,
    fit,
    fold_of,
    in_holdout,
    matrix,
)
from app.routing.learned import DEFAULT_DIM, LearnedScorer

Floats = npt.NDArray[np.float64]
LAMBDAS: tuple[float, ...] = (0.0, *np.logspace(0, 9, 91).tolist(), float("inf"))


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """What ``pareto train`` was asked for."""

    folds: int = 5
    seed: int = 0
    holdout: float = 0.0
    dim: int = DEFAULT_DIM
    config: TrainConfig = field(default_factory=TrainConfig)
    target_strong_share: float | None = None
    target_quality: float | None = None


def example_id(dataset: Dataset, row_id: str) -> str:
    """The id a dataset row has in training (and in the holdout rule)."""
    return f"{dataset.name}/{row_id}"


def sweep_direct(
    q: Floats, a: Arrays, lambdas: Sequence[float] = LAMBDAS
) -> list[tuple[float, float]]:
    """(cost/1k, quality) of ``argmax 100·q − λ·cost`` per row for each λ (∞ = cheapest)."""
    points = []
    for lam in lambdas:
        # The tiny extra cost weight breaks utility ties towards the cheaper model.
        utility = 100.0 * q - (lam + 1e-9) * a.cost if np.isfinite(lam) else -a.cost
        points.append(a.point(np.argmax(utility, axis=1).astype(np.int64)))
    return points


def heldout_metrics(dataset: Dataset, q: Floats, models: Sequence[str]) -> dict[str, Any]:
    """Metrics of out-of-fold predictions ``q`` (columns ``models``) on one dataset."""
    a = arrays(dataset)
    cols = [list(models).index(m) for m in dataset.models]
    qd = q[:, cols]
    base = baselines(dataset, a)
    out: dict[str, Any] = {"dataset": dataset.name, "rows": a.n}
    if a.quality.shape[1] == 2:
        s, w = strong_weak(a)
        big_s, big_w = 100 * a.quality[:, s].mean(), 100 * a.quality[:, w].mean()
        learned = routellm.summarize(
            routellm.curve(qd[:, s] - qd[:, w], a.quality[:, s], a.quality[:, w]), big_s, big_w
        )
        assert base.two_model is not None
        for name, summary in (("learned", learned), *base.two_model.items()):
            out[name] = {"apgr": summary.apgr, "cpt50": summary.cpt50, "cpt80": summary.cpt80}
    cq = envelope.evaluate(sweep_direct(qd, a), base.anchors)
    for name, m in (("learned_cq", cq), ("mix_cq", base.mix), ("oracle_cq", base.oracle)):
        out[name] = {"area": m.area, "cost_95_best": m.cost_95_best}
    return out


def calibrate(
    dataset: Dataset, q: Floats, models: Sequence[str], options: TrainOptions
) -> dict[str, Any] | None:
    """On validation (out-of-fold) rows of a two-model dataset, the gap threshold and the
    λ_cost that hit the target strong-model share or quality."""
    if len(dataset.models) != 2 or (
        options.target_strong_share is None and options.target_quality is None
    ):
        return None
    a = arrays(dataset)
    s, w = strong_weak(a)
    cols = [list(models).index(m) for m in dataset.models]
    gap = q[:, cols[s]] - q[:, cols[w]]
    dcost = a.cost[:, s] - a.cost[:, w]
    ratio = np.where(dcost > 0, 100.0 * gap / np.maximum(dcost, 1e-300), np.inf)
    order = np.sort(ratio)[::-1]
    if options.target_strong_share is not None:
        k = int(round(options.target_strong_share * a.n))
    else:
        target = float(options.target_quality or 0.0)
        k = a.n
        ranked = np.argsort(-ratio, kind="stable")
        quality = a.quality[:, w].copy()
        running = quality.sum()
        if running / a.n >= target:
            k = 0
        else:
            for i, row in enumerate(ranked, 1):
                running += a.quality[row, s] - a.quality[row, w]
                if running / a.n >= target:
                    k = i
                    break
    k = min(max(k, 0), a.n)
    lam = float(order[k - 1]) * (1 - 1e-9) if k > 0 else float(order[0]) * 1.000001 + 1.0
    strong = ratio > lam if k > 0 else np.zeros(a.n, dtype=bool)
    gap_threshold = float(np.sort(gap)[::-1][k - 1]) if k > 0 else float(gap.max()) + 1e-9
    return {
        "dataset": dataset.name,
        "target_strong_share": options.target_strong_share,
        "target_quality": options.target_quality,
        "lambda_cost": lam,
        "gap_threshold": gap_threshold,
        "strong_share": float(strong.mean()),
        "quality": float(np.where(strong, a.quality[:, s], a.quality[:, w]).mean()),
        "strong_model": dataset.models[s],
        "weak_model": dataset.models[w],
    }


@dataclass(slots=True)
class TrainResult:
    """The fitted scorer and the report ``pareto train`` prints."""

    scorer: LearnedScorer
    report: dict[str, Any]


def _labels(examples: Sequence[Example], models: Sequence[str]) -> tuple[Floats, Floats]:
    index = {m: i for i, m in enumerate(models)}
    y = np.zeros((len(examples), len(models)))
    mask = np.zeros_like(y)
    for i, ex in enumerate(examples):
        for m, v in ex.labels.items():
            y[i, index[m]] = v
            mask[i, index[m]] = 1.0
    return y, mask


def train(
    paths: Sequence[Path],
    options: TrainOptions,
    models_path: Path | None = None,
    stream: TextIO | None = None,
    show_progress: bool | None = None,
) -> TrainResult:
    """Load, cross-validate, calibrate, fit on all training rows; nothing is written here."""
    datasets, examples = load_sources(list(paths), options.dim, models_path)
    kept = [e for e in examples if not in_holdout(e.id, options.holdout, options.seed)]
    if len(kept) < max(options.folds, 2):
        raise ValueError(f"only {len(kept)} training rows; need at least {options.folds}")
    models = sorted({m for e in kept for m in e.labels})
    x: Matrix = matrix([e.features for e in kept], options.dim)
    y, mask = _labels(kept, models)
    report: dict[str, Any] = {
        "rows": len(kept),
        "held_out_rows": len(examples) - len(kept),
        "models": models,
        "folds": options.folds,
        "seed": options.seed,
        "holdout": options.holdout,
        "config": asdict(options.config),
        "heldout": [],
    }
    if options.folds >= 2:
        folds = fold_of([e.id for e in kept], options.folds, options.seed)
        bar = Progress("train: cross-validation", options.folds, stream, show_progress)
        oof = cross_val_predict(x, y, mask, folds, options.config, lambda d, t: bar.advance())
        bar.close()
        position = {e.id: i for i, e in enumerate(kept)}
        calibration = []
        for ds in datasets:
            rows = [i for i, r in enumerate(ds.rows) if example_id(ds, r.id) in position]
            if len(rows) < 10:
                continue
            sub = ds.subset(rows)
            q = oof[[position[example_id(ds, r.id)] for r in sub.rows]]
            report["heldout"].append(heldout_metrics(sub, q, models))
            cal = calibrate(sub, q, models, options)
            if cal is not None:
                calibration.append(cal)
        report["calibration"] = calibration
    bar = Progress("train: final fit", options.config.steps, stream, show_progress)
    w, b = fit(x, y, mask, options.config, lambda d, t: bar.advance())
    bar.close()
    meta = {
        "trained_on": [ds.name for ds in datasets]
        + sorted({e.source for e in kept if e.source.startswith("feedback:")}),
        "holdout": {"fraction": options.holdout, "seed": options.seed},
        "report": report,
    }
    scorer = LearnedScorer(w.astype(np.float32), b, tuple(models), meta)
    return TrainResult(scorer, report)
