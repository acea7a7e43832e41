"""Two-model metrics computed exactly as RouteLLM does (``routellm/evals/evaluate.py``).

A router gives each row a score ``s_i`` (higher = send to the strong model). The curve has
one point per decile edge of ``s``; PGR, CPT(x) and APGR follow from it. All qualities here
are on the ×100 scale, as in RouteLLM's plots; every metric is affine-invariant anyway.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Curve:
    """Operating points sorted by strong-call %: ``strong_pcts`` (0–100) and ``scores`` (×100)."""

    strong_pcts: tuple[float, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TwoModelSummary:
    """A router's RouteLLM metrics against the always-strong ``S`` and always-weak ``W``."""

    apgr: float
    auc: float
    cpt50: float
    cpt80: float
    curve: Curve


def thresholds(router_scores: Sequence[float] | Floats) -> Floats:
    """``pandas.qcut(s, 10, retbins=True)`` edges (linear quantiles), duplicates dropped."""
    s = np.asarray(router_scores, dtype=np.float64)
    edges: Floats = np.quantile(s, np.linspace(0.0, 1.0, 11))
    return np.unique(edges)


def curve(router_scores: Sequence[float] | Floats, strong: Floats, weak: Floats) -> Curve:
    """One point per edge: strong iff ``s >= t_k``, and for the last edge ``s > t_max``.

    With a constant score (one edge) the two points are "everything strong" and "nothing".
    """
    s = np.asarray(router_scores, dtype=np.float64)
    edges = thresholds(s)
    n = len(s)
    masks = [s >= t for t in edges[:-1]] if len(edges) > 1 else [s >= edges[0]]
    masks.append(s > edges[-1])
    points = []
    for mask in masks:
        routed = np.where(mask, strong, weak)
        points.append((100.0 * float(mask.sum()) / n, 100.0 * float(routed.mean())))
    points.sort(key=lambda p: p[0])
    return Curve(tuple(p[0] for p in points), tuple(p[1] for p in points))


def auc(c: Curve) -> float:
    """Trapezoid area of ``scores`` over ``strong_pcts / 100``."""
    x = np.asarray(c.strong_pcts) / 100.0
    y = np.asarray(c.scores)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def apgr(c: Curve, strong_score: float, weak_score: float) -> float:
    """``(AUC − W·Δ) / (S·Δ − W·Δ)`` with ``Δ`` the span of strong-call fractions."""
    delta = (max(c.strong_pcts) - min(c.strong_pcts)) / 100.0
    return (auc(c) - weak_score * delta) / (strong_score * delta - weak_score * delta)


def pgr(score: float, strong_score: float, weak_score: float) -> float:
    """Performance gap recovered by one operating point."""
    return (score - weak_score) / (strong_score - weak_score)


def cpt(c: Curve, fraction: float, strong_score: float, weak_score: float) -> float:
    """Strong-call % to recover ``fraction`` of the gap: ``numpy.interp`` as RouteLLM does."""
    target = weak_score + fraction * (strong_score - weak_score)
    return float(np.interp(target, c.scores, c.strong_pcts))


def summarize(c: Curve, strong_score: float, weak_score: float) -> TwoModelSummary:
    """APGR, AUC, CPT(50 %) and CPT(80 %) of a curve."""
    return TwoModelSummary(
        apgr=apgr(c, strong_score, weak_score),
        auc=auc(c),
        cpt50=cpt(c, 0.5, strong_score, weak_score),
        cpt80=cpt(c, 0.8, strong_score, weak_score),
        curve=c,
    )


def random_router_curve(strong: Floats, weak: Floats, runs: int = 10, seed: int = 0) -> Curve:
    """RouteLLM's random router: ``random.seed(seed)``, ``runs`` runs of ``s_i ~ U(0, 1)``,
    points averaged per strong-call %."""
    rng = random.Random(seed)
    by_pct: dict[float, list[float]] = {}
    for _ in range(runs):
        s = np.array([rng.uniform(0, 1) for _ in range(len(strong))])
        c = curve(s, strong, weak)
        for pct, score in zip(c.strong_pcts, c.scores, strict=True):
            by_pct.setdefault(pct, []).append(score)
    pcts = sorted(by_pct)
    return Curve(tuple(pcts), tuple(float(np.mean(by_pct[p])) for p in pcts))


def oracle_curve(strong: Floats, weak: Floats) -> Curve:
    """RouteLLM ``get_optimal_accuracy(p)`` for p = 0, 0.1, …, 1.

    Binary scores: ``(#weak right + min(n·p, #(strong right ∧ weak wrong))) / n``; graded
    scores: the weak score everywhere plus the ``int(n·p)`` largest positive gains.
    """
    n = len(strong)
    binary = bool(np.all(np.isin(strong, (0.0, 1.0))) and np.all(np.isin(weak, (0.0, 1.0))))
    gains = np.sort((strong - weak)[strong > weak])[::-1]
    pcts, scores = [], []
    for k in range(11):
        p = k / 10
        if binary:
            value = (float(weak.sum()) + min(n * p, float(len(gains)))) / n
        else:
            value = (float(weak.sum()) + float(gains[: int(n * p)].sum())) / n
        pcts.append(100.0 * p)
        scores.append(100.0 * value)
    return Curve(tuple(pcts), tuple(scores))
