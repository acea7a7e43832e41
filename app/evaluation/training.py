"""Offline training of the learned scorer (``app/routing/learned.py``): numpy only.

Each model gets a logistic head on the hashed features, fitted by full-batch Adam on the
masked cross-entropy (a row may label only some models: feedback rows label the one model
that served them) plus an L2 penalty. Folds come from a seeded CRC-32 of the row id, so a
split does not depend on file order and is reproducible.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.routing.learned import SparseFeatures

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Matrix:
    """CSR feature matrix: row ``i`` owns ``indices[indptr[i]:indptr[i+1]]``."""

    indices: Ints
    values: npt.NDArray[np.float32]
    indptr: Ints
    dim: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def rows(self, which: Ints) -> Matrix:
        """The sub-matrix of rows ``which``."""
        starts, ends = self.indptr[which], self.indptr[which + 1]
        lengths = ends - starts
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return Matrix(self.indices[take], self.values[take], indptr, self.dim)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters of one fit."""

    l2: float = 1e-4
    steps: int = 200
    learning_rate: float = 0.05


def matrix(features: Sequence[SparseFeatures], dim: int) -> Matrix:
    """Stack sparse feature rows into a CSR matrix."""
    lengths = np.fromiter((len(f.indices) for f in features), dtype=np.int64, count=len(features))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.fromiter((i for f in features for i in f.indices), dtype=np.int64)
    values = np.fromiter((v for f in features for v in f.values), dtype=np.float32)
    return Matrix(indices, values, indptr, dim)


def fold_of(ids: Sequence[str], k: int, seed: int) -> Ints:
    """Fold number of each row id: ``crc32(f"{seed}:{id}") % k``."""
    return np.array([zlib.crc32(f"{seed}:{i}".encode()) % k for i in ids], dtype=np.int64)


def in_holdout(row_id: str, fraction: float, seed: int) -> bool:
    """Fixed split: a row is held out iff its seeded hash falls below ``fraction``."""
    return zlib.crc32(f"holdout:{seed}:{row_id}".encode()) / 2**32 < fraction


def _logits(x: Matrix, w: Floats, b: Floats) -> Floats:
    contrib = x.values[:, None].astype(np.float64) * w[x.indices]
    z = np.zeros((x.n_rows, w.shape[1]))
    nonempty = x.indptr[:-1] < x.indptr[1:]
    z[nonempty] = np.add.reduceat(contrib, x.indptr[:-1][nonempty], axis=0)
    return z + b


def fit(
    x: Matrix,
    y: Floats,
    mask: Floats,
    config: TrainConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Floats, Floats]:
    """Weights ``(dim × models)`` and biases minimising masked cross-entropy + L2."""
    n_models = y.shape[1]
    w = np.zeros((x.dim, n_models))
    counts = np.maximum(mask.sum(axis=0), 1.0)
    rate = np.clip((y * mask).sum(axis=0) / counts, 1e-3, 1 - 1e-3)
    b = np.log(rate / (1 - rate))
    row_of = np.repeat(np.arange(x.n_rows), np.diff(x.indptr))
    vals = x.values.astype(np.float64)
    params = [w, b]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, config.steps + 1):
        p = 1.0 / (1.0 + np.exp(-_logits(x, w, b)))
        g = (p - y) * mask / counts
        gw = np.empty_like(w)
        for m in range(n_models):
            gw[:, m] = np.bincount(x.indices, weights=vals * g[row_of, m], minlength=x.dim)
        gw += config.l2 * w
        grads = [gw, g.sum(axis=0)]
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            m1[i] = beta1 * m1[i] + (1 - beta1) * grad
            m2[i] = beta2 * m2[i] + (1 - beta2) * grad * grad
            mhat = m1[i] / (1 - beta1**step)
            vhat = m2[i] / (1 - beta2**step)
            param -= config.learning_rate * mhat / (np.sqrt(vhat) + eps)
        if progress is not None:
            progress(step, config.steps)
    return w, b


def predict(x: Matrix, w: Floats, b: Floats) -> Floats:
    """Predicted quality per row and model."""
    out: Floats = 1.0 / (1.0 + np.exp(-_logits(x, w, b)))
    return out


def cross_val_predict(
    x: Matrix,
    y: Floats,
    mask: Floats,
    folds: Ints,
    config: TrainConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Floats:
    """Out-of-fold predictions: every row is predicted by a model that never saw it."""
    out = np.zeros_like(y)
    k = int(folds.max()) + 1
    for fold in range(k):
        test = np.flatnonzero(folds == fold)
        train = np.flatnonzero(folds != fold)
        w, b = fit(x.rows(train), y[train], mask[train], config)
        out[test] = predict(x.rows(test), w, b)
        if progress is not None:
            progress(fold + 1, k)
    return out
