"""``pareto eval``'s engine: run a router over every row for each setting of its knob.

A router under evaluation is a :class:`Decider`: ``decide(row, lambda_cost) -> model index``
(the gateway adapter runs the real routing code). Many-model sets sweep ``λ_cost`` over
:data:`LAMBDAS` and keep each setting's (cost per 1k, quality) point. Two-model sets give each
row the RouteLLM router score ``s_i`` = the largest ``λ_cost`` at which the strong model is
still chosen (routing is monotone in λ_cost, so this is found by bisection), then apply
RouteLLM's decile thresholds to it; the λ-sweep points follow from the same scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.evaluation import envelope, routellm
from app.evaluation.baselines import Arrays, Baselines, strong_weak
from app.evaluation.progress import Progress

Floats = npt.NDArray[np.float64]
# λ_cost in quality points (0-100) per USD: 0 = quality only, 1e12 = cost only.
LAMBDAS: tuple[float, ...] = (0.0, *np.logspace(-1, 12, 53).tolist())
LOG_LO, LOG_HI = -2.0, 13.0
BISECTION_STEPS = 16


class Decider(Protocol):
    """A router under evaluation (the gateway's routing with some quality estimate)."""

    name: str

    def decide(self, row: int, lambda_cost: float) -> int:
        """Index of the model the router sends ``row`` to at this λ_cost."""
        ...


@dataclass(frozen=True, slots=True)
class RouterResult:
    """One router's curve on one dataset."""

    name: str
    lambdas: tuple[float, ...]
    points: tuple[tuple[float, float], ...]
    cost_quality: envelope.CostQuality
    two_model: routellm.TwoModelSummary | None
    strong_share: tuple[float, ...] | None


def critical_lambda(decide: Callable[[float], bool]) -> float:
    """Largest λ (log-bisection on [1e-2, 1e13]) with ``decide(λ)`` true; 0 if none, inf if
    always true."""
    if not decide(10.0**LOG_LO):
        return 0.0
    if decide(10.0**LOG_HI):
        return math.inf
    lo, hi = LOG_LO, LOG_HI
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if decide(10.0**mid):
            lo = mid
        else:
            hi = mid
    return float(10.0**lo)


def run(
    decider: Decider,
    a: Arrays,
    base: Baselines,
    progress: Progress | None = None,
    lambdas: Sequence[float] = LAMBDAS,
) -> RouterResult:
    """Evaluate one router on one dataset's arrays."""
    n, n_models = a.quality.shape
    if n_models == 2:
        s_idx, w_idx = strong_weak(a)
        scores = np.empty(n)
        for i in range(n):

            def goes_strong(lam: float, row: int = i) -> bool:
                return decider.decide(row, lam) == s_idx

            scores[i] = critical_lambda(goes_strong)
            if progress is not None:
                progress.advance()
        strong, weak = a.quality[:, s_idx], a.quality[:, w_idx]
        big_s, big_w = 100 * strong.mean(), 100 * weak.mean()
        finite = np.where(np.isinf(scores), 10.0**LOG_HI * 10, scores)
        two = routellm.summarize(
            routellm.curve(np.log10(finite + 1e-300), strong, weak), big_s, big_w
        )
        points, shares = [], []
        for lam in lambdas:
            to_strong = scores > lam
            choice = np.where(to_strong, s_idx, w_idx).astype(np.int64)
            points.append(a.point(choice))
            shares.append(float(to_strong.mean()))
        cq = envelope.evaluate(points, base.anchors)
        return RouterResult(decider.name, tuple(lambdas), tuple(points), cq, two, tuple(shares))
    choices = np.empty((len(lambdas), n), dtype=np.int64)
    for i in range(n):
        for k, lam in enumerate(lambdas):
            choices[k, i] = decider.decide(i, lam)
        if progress is not None:
            progress.advance()
    points = [a.point(choices[k]) for k in range(len(lambdas))]
    cq = envelope.evaluate(points, base.anchors)
    return RouterResult(decider.name, tuple(lambdas), tuple(points), cq, None, None)


def work_units(a: Arrays) -> int:
    """How many progress steps :func:`run` takes (one per row)."""
    return a.n
