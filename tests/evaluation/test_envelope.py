"""Many-model cost-quality metrics: the data README's worked example."""

from __future__ import annotations

import pytest

from app.evaluation import envelope

ANCHORS = envelope.Anchors(cheap_cost=1.0, cheap_quality=0.2, best_cost=11.0, best_quality=0.8)


def test_worked_example_from_the_data_readme() -> None:
    m = envelope.evaluate([(3.0, 0.62), (6.0, 0.74)], ANCHORS)
    assert [(round(x, 9), round(y, 9)) for x, y in m.hull] == [(0, 0), (0.2, 0.7), (0.5, 0.9)]
    assert m.area == pytest.approx(0.76)
    assert m.cost_50 == pytest.approx(2.4286, abs=1e-4)
    assert m.cost_80 == pytest.approx(4.5)
    assert m.cost_100 is None
    assert m.cost_95_best is None  # q = 0.76 needs y = 0.933 > 0.9


def test_mixing_cheapest_and_best_gives_half() -> None:
    m = envelope.evaluate([(1.0, 0.2), (11.0, 0.8)], ANCHORS)
    assert m.area == pytest.approx(0.5)
    assert m.cost_100 == pytest.approx(11.0)
    assert m.cost_95_best == pytest.approx(1 + 10 * (0.76 - 0.2) / 0.6)


def test_hull_is_cut_at_its_highest_point_and_dominated_points_do_not_count() -> None:
    # (0.9, 0.5) lies under the chord; (1.5, 0.95) is higher than the top at x = 1 but beyond.
    h = envelope.hull([(0.5, 0.9), (0.9, 0.5), (1.2, 0.8)])
    assert h == [(0.0, 0.0), (0.5, 0.9)]
    assert envelope.area(h) == pytest.approx(0.5 * 0.9 / 2 + 0.5 * 0.9)


def test_points_cheaper_than_the_cheapest_model_are_clipped_to_zero() -> None:
    h = envelope.hull([(-0.2, 0.3), (0.5, 1.0)])
    assert h[0] == (0.0, 0.3)
    assert envelope.x_to_reach(h, 0.2) == 0.0


def test_anchors_pick_cheapest_and_best_with_cheaper_on_ties() -> None:
    a = envelope.anchors([(2.0, 0.5), (1.0, 0.3), (5.0, 0.9), (4.0, 0.9)])
    assert (a.cheap_cost, a.cheap_quality) == (1.0, 0.3)
    assert (a.best_cost, a.best_quality) == (4.0, 0.9)
