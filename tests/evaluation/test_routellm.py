"""RouteLLM metrics: the data README's worked example and hand-computed curves."""

from __future__ import annotations

import random

import numpy as np
import pytest

from app.evaluation import routellm

WORKED = routellm.Curve((0.0, 50.0, 100.0), (60.0, 75.0, 80.0))


def test_worked_example_from_the_data_readme() -> None:
    assert routellm.auc(WORKED) == pytest.approx(72.5)
    assert routellm.apgr(WORKED, 80.0, 60.0) == pytest.approx(0.625)
    assert routellm.cpt(WORKED, 0.5, 80.0, 60.0) == pytest.approx(33.333, abs=1e-3)
    assert routellm.cpt(WORKED, 0.8, 80.0, 60.0) == pytest.approx(60.0)
    assert routellm.cpt(WORKED, 0.2, 80.0, 60.0) == pytest.approx(13.333, abs=1e-3)
    assert routellm.pgr(75.0, 80.0, 60.0) == pytest.approx(0.75)


def test_curve_uses_decile_edges_and_strict_last_edge() -> None:
    # Scores 0..9: edges are 0, 0.9, 1.8, ..., 9 (linear quantiles). s >= 0 sends all 10 rows
    # to strong, s >= 0.9 sends 9 ..., and the last edge uses s > 9: nobody.
    s = np.arange(10, dtype=float)
    strong = np.ones(10)
    weak = np.zeros(10)
    c = routellm.curve(s, strong, weak)
    assert c.strong_pcts == tuple(float(10 * k) for k in range(11))
    assert c.scores == c.strong_pcts  # strong always right, weak always wrong
    assert routellm.apgr(c, 100.0, 0.0) == pytest.approx(0.5)


def test_duplicate_edges_are_dropped() -> None:
    # Ten zeros and a one: the 0-90 % quantiles are all 0, the 100 % one is 1.
    s = np.array([0.0] * 10 + [1.0])
    weak = np.array([0.0] * 10 + [1.0])
    c = routellm.curve(s, np.ones(11), weak)
    # Unique edges 0 and 1: s >= 0 sends everything to strong, the last edge (s > 1) nothing.
    assert c.strong_pcts == (0.0, 100.0)
    assert c.scores == pytest.approx((100 / 11, 100.0))


def test_a_perfect_ranking_beats_random_and_matches_the_oracle_shape() -> None:
    strong = np.array([1.0, 1, 1, 0, 1, 0, 1, 1, 0, 1])
    weak = np.array([1.0, 0, 1, 0, 0, 0, 1, 1, 1, 0])
    gain = strong - weak
    perfect = routellm.summarize(
        routellm.curve(gain, strong, weak), 100 * strong.mean(), 100 * weak.mean()
    )
    assert perfect.apgr > 1.0  # weak sometimes beats strong, so a perfect ranking exceeds 1


def test_oracle_curve_binary_formula() -> None:
    strong = np.array([1.0, 1, 1, 0, 1, 0, 1, 1, 0, 1])
    weak = np.array([1.0, 0, 1, 0, 0, 0, 1, 1, 1, 0])
    c = routellm.oracle_curve(strong, weak)
    # 5 weak right, 3 rows where only strong is right: (5 + min(10p, 3)) / 10
    assert c.scores == pytest.approx([50, 60, 70, 80, 80, 80, 80, 80, 80, 80, 80])


def test_oracle_curve_graded_scores_adds_largest_gains() -> None:
    strong = np.array([0.9, 0.5, 0.7, 0.2])
    weak = np.array([0.1, 0.5, 0.6, 0.4])
    c = routellm.oracle_curve(strong, weak)
    base = weak.mean() * 100
    assert c.scores[0] == pytest.approx(base)
    assert c.scores[3] == pytest.approx(base + 100 * 0.8 / 4)  # int(4 * 0.3) = 1 gain: 0.8
    assert c.scores[10] == pytest.approx(base + 100 * 0.9 / 4)  # both positive gains


def test_random_router_gives_apgr_near_one_half_on_a_large_synthetic_set() -> None:
    rng = random.Random(7)
    n = 20_000
    strong = np.array([1.0 if rng.random() < 0.8 else 0.0 for _ in range(n)])
    weak = np.array([1.0 if rng.random() < 0.6 else 0.0 for _ in range(n)])
    c = routellm.random_router_curve(strong, weak, runs=10, seed=0)
    s = routellm.summarize(c, 100 * strong.mean(), 100 * weak.mean())
    assert s.apgr == pytest.approx(0.5, abs=0.02)
    assert s.cpt50 == pytest.approx(50.0, abs=3.0)


def test_metrics_are_affine_invariant() -> None:
    rng = np.random.default_rng(3)
    strong = rng.uniform(0, 1, 500)
    weak = rng.uniform(0, 0.8, 500)
    s = strong - weak + rng.normal(0, 0.3, 500)
    a = routellm.summarize(routellm.curve(s, strong, weak), 100 * strong.mean(), 100 * weak.mean())
    b = routellm.summarize(
        routellm.curve(s, 10 * strong + 1, 10 * weak + 1),
        100 * (10 * strong.mean() + 1),
        100 * (10 * weak.mean() + 1),
    )
    assert a.apgr == pytest.approx(b.apgr)
    assert a.cpt50 == pytest.approx(b.cpt50)
