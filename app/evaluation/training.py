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
    steps: int = 150
    learning_rate: float = 0.05
    rank: int = 0  # 0 = one free head per model; k > 0 = W factorised as V (dim×k) · A (k×M)
    seed: int = 0


def matrix(features: Sequence[SparseFeatures], dim: int) -> Matrix:
    """Stack sparse feature rows into a CSR matrix."""
    lengths = np.fromiter((len(f.indices) for f in features), dtype=np.int64, count=len(features))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if not features:
        return Matrix(np.zeros(0, np.int64), np.zeros(0, np.float32), indptr, dim)
    indices = np.concatenate([np.asarray(f.indices, dtype=np.int64) for f in features])
    values = np.concatenate([np.asarray(f.values, dtype=np.float32) for f in features])
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
    """Weights ``(dim × models)`` and biases minimising masked cross-entropy + L2.

    Buckets no training row uses get a zero gradient and stay at zero, so the fit runs on
    the used buckets only (renumbered densely) and scatters the result back.
    """
    used, compact = np.unique(x.indices, return_inverse=True)
    dense = Matrix(compact.astype(np.int64), x.values, x.indptr, len(used))
    w_used, b = _fit_dense(dense, y, mask, config, progress)
    w = np.zeros((x.dim, y.shape[1]))
    w[used] = w_used
    return w, b


def _adam(
    params: list[Floats],
    grads: list[Floats],
    m1: list[Floats],
    m2: list[Floats],
    step: int,
    rate: float,
) -> None:
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        m1[i] = beta1 * m1[i] + (1 - beta1) * grad
        m2[i] = beta2 * m2[i] + (1 - beta2) * grad * grad
        mhat = m1[i] / (1 - beta1**step)
        vhat = m2[i] / (1 - beta2**step)
        param -= rate * mhat / (np.sqrt(vhat) + eps)


def _xt(x: Matrix, row_of: Ints, vals: Floats, g: Floats) -> Floats:
    """``X^T g`` for a dense ``g`` (rows × columns)."""
    out = np.empty((x.dim, g.shape[1]))
    for m in range(g.shape[1]):
        out[:, m] = np.bincount(x.indices, weights=vals * g[row_of, m], minlength=x.dim)
    return out


def _fit_dense(
    x: Matrix,
    y: Floats,
    mask: Floats,
    config: TrainConfig,
    progress: Callable[[int, int], None] | None,
) -> tuple[Floats, Floats]:
    n_models = y.shape[1]
    counts = np.maximum(mask.sum(axis=0), 1.0)
    rate = np.clip((y * mask).sum(axis=0) / counts, 1e-3, 1 - 1e-3)
    b = np.log(rate / (1 - rate))
    row_of = np.repeat(np.arange(x.n_rows), np.diff(x.indptr))
    vals = x.values.astype(np.float64)
    if config.rank > 0:
        rng = np.random.default_rng(config.seed)
        v = rng.normal(0.0, 0.01, (x.dim, config.rank))
        a = rng.normal(0.0, 0.1, (config.rank, n_models))
        params = [v, a, b]
    else:
        w = np.zeros((x.dim, n_models))
        params = [w, b]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    for step in range(1, config.steps + 1):
        if config.rank > 0:
            h = _logits(x, v, np.zeros(config.rank))  # X·V, rows × rank
            z = h @ a + b
        else:
            z = _logits(x, w, b)
        p = 1.0 / (1.0 + np.exp(-z))
        g = (p - y) * mask / counts
        if config.rank > 0:
            grads = [
                _xt(x, row_of, vals, g @ a.T) + config.l2 * v,
                h.T @ g + config.l2 * a,
                g.sum(axis=0),
            ]
        else:
            grads = [_xt(x, row_of, vals, g) + config.l2 * w, g.sum(axis=0)]
        _adam(params, grads, m1, m2, step, config.learning_rate)
        if progress is not None:
            progress(step, config.steps)
    if config.rank > 0:
        return v @ a, b
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
