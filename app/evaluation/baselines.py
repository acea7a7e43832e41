"""Dataset-level arrays and the README's baselines: single models, the single-model mix,
random (uniform and RouteLLM-style), and the oracle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.evaluation import envelope, routellm
from app.evaluation.dataset import Dataset

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Arrays:
    """``quality[i, m]`` and ``cost[i, m]`` (USD) of every row and model."""

    quality: Floats
    cost: Floats

    @property
    def n(self) -> int:
        return int(self.quality.shape[0])

    def point(self, choice: npt.NDArray[np.int64]) -> tuple[float, float]:
        """(cost per 1k requests, mean quality) of a per-row model choice."""
        rows = np.arange(self.n)
        return 1000.0 * float(self.cost[rows, choice].mean()), float(
            self.quality[rows, choice].mean()
        )


def arrays(dataset: Dataset) -> Arrays:
    """Quality and cost matrices of a dataset (cost by the README's rule)."""
    q = np.array([row.scores for row in dataset.rows], dtype=np.float64)
    n_in = np.array([row.input_tokens for row in dataset.rows], dtype=np.float64)
    n_out = np.array([row.output_tokens for row in dataset.rows], dtype=np.float64)
    p_in = np.array([p.input_usd_per_mtok for p in dataset.prices])
    p_out = np.array([p.output_usd_per_mtok for p in dataset.prices])
    cost = (n_in[:, None] * p_in[None, :] + n_out * p_out[None, :]) / 1e6
    return Arrays(q, cost)


def single_points(a: Arrays) -> list[tuple[float, float]]:
    """Each single model's (cost/1k, quality)."""
    return [
        (1000.0 * float(a.cost[:, m].mean()), float(a.quality[:, m].mean()))
        for m in range(a.quality.shape[1])
    ]


def strong_weak(a: Arrays) -> tuple[int, int]:
    """Indices of the strong (higher mean quality; pricier on ties) and the weak model."""
    if a.quality.shape[1] != 2:
        raise ValueError("strong/weak needs a two-model dataset")
    pts = single_points(a)
    strong = max((0, 1), key=lambda m: (pts[m][1], pts[m][0]))
    return strong, 1 - strong


def oracle_choice(a: Arrays) -> npt.NDArray[np.int64]:
    """Per row, the cheapest model among those reaching the row's maximum score."""
    best = a.quality >= a.quality.max(axis=1, keepdims=True)
    masked = np.where(best, a.cost, np.inf)
    out: npt.NDArray[np.int64] = np.argmin(masked, axis=1).astype(np.int64)
    return out


def random_uniform_point(a: Arrays) -> tuple[float, float]:
    """A uniformly random model per request, scored by its expected value."""
    return 1000.0 * float(a.cost.mean()), float(a.quality.mean())


@dataclass(frozen=True, slots=True)
class Baselines:
    """Every reference a router is compared with, on one dataset (or its held-out rows)."""

    single: dict[str, tuple[float, float]]
    anchors: envelope.Anchors
    mix: envelope.CostQuality
    random_uniform: envelope.CostQuality
    random_uniform_point: tuple[float, float]
    oracle: envelope.CostQuality
    oracle_point: tuple[float, float]
    two_model: dict[str, routellm.TwoModelSummary] | None
    strong_weak: tuple[str, str] | None


def baselines(dataset: Dataset, a: Arrays) -> Baselines:
    """Compute the README's baselines for a dataset."""
    single = single_points(a)
    anc = envelope.anchors(single)
    oracle_pt = a.point(oracle_choice(a))
    rnd_pt = random_uniform_point(a)
    two = None
    names = None
    if a.quality.shape[1] == 2:
        s, w = strong_weak(a)
        names = (dataset.models[s], dataset.models[w])
        big_s, big_w = 100 * a.quality[:, s].mean(), 100 * a.quality[:, w].mean()
        two = {
            "random": routellm.summarize(
                routellm.random_router_curve(a.quality[:, s], a.quality[:, w]), big_s, big_w
            ),
            "oracle": routellm.summarize(
                routellm.oracle_curve(a.quality[:, s], a.quality[:, w]), big_s, big_w
            ),
        }
    return Baselines(
        single=dict(zip(dataset.models, single, strict=True)),
        anchors=anc,
        mix=envelope.evaluate(single, anc),
        random_uniform=envelope.evaluate([rnd_pt], anc),
        random_uniform_point=rnd_pt,
        oracle=envelope.evaluate([oracle_pt], anc),
        oracle_point=oracle_pt,
        two_model=two,
        strong_weak=names,
    )
