"""Many-model cost–quality metrics: the envelope of a router's settings, its area, and the
cost at which it reaches a quality level (normative definitions in the data README).

Points are ``(cost per 1k requests, mean quality)``. They are normalised so that the
cheapest single model is (0, 0) and the best single model is (1, 1); the envelope is the
upper concave hull of the points plus (0, 0), cut at its highest point and flat beyond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Anchors:
    """The cheapest single model and the best single model (cheaper one on ties)."""

    cheap_cost: float
    cheap_quality: float
    best_cost: float
    best_quality: float

    def normalise(self, cost: float, quality: float) -> tuple[float, float]:
        x = (cost - self.cheap_cost) / (self.best_cost - self.cheap_cost)
        y = (quality - self.cheap_quality) / (self.best_quality - self.cheap_quality)
        return x, y

    def cost_at(self, x: float) -> float:
        return self.cheap_cost + x * (self.best_cost - self.cheap_cost)


@dataclass(frozen=True, slots=True)
class CostQuality:
    """A router's envelope metrics; costs are USD per 1k requests, ``None`` = never reached."""

    area: float
    cost_50: float | None
    cost_80: float | None
    cost_100: float | None
    cost_95_best: float | None
    hull: tuple[tuple[float, float], ...]


def anchors(single: Sequence[tuple[float, float]]) -> Anchors:
    """Anchors from the single models' (cost/1k, quality) points."""
    cheap = min(single, key=lambda p: (p[0], -p[1]))
    best = min(single, key=lambda p: (-p[1], p[0]))
    return Anchors(cheap[0], cheap[1], best[0], best[1])


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-decreasing upper concave hull of normalised points plus (0, 0), x clipped at 0."""
    best_at: dict[float, float] = {0.0: 0.0}
    for x, y in points:
        x = max(x, 0.0)
        best_at[x] = max(best_at.get(x, y), y)
    ordered = sorted(best_at.items())
    upper: list[tuple[float, float]] = []
    for p in ordered:
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) >= 0:
            upper.pop()
        upper.append(p)
    top = max(range(len(upper)), key=lambda i: (upper[i][1], -i))
    return upper[: top + 1]


def area(h: Sequence[tuple[float, float]]) -> float:
    """``∫₀¹ E(x) dx`` with E flat after the hull's last (highest) point."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(h, h[1:], strict=False):
        if x0 >= 1.0:
            break
        if x1 > 1.0:
            y1 = y0 + (y1 - y0) * (1.0 - x0) / (x1 - x0)
            x1 = 1.0
        total += (x1 - x0) * (y0 + y1) / 2.0
    x_last, y_last = h[-1]
    if x_last < 1.0:
        total += (1.0 - x_last) * y_last
    return total


def x_to_reach(h: Sequence[tuple[float, float]], level: float) -> float | None:
    """The smallest x with ``E(x) >= level``; ``None`` when E never reaches it."""
    if h[0][1] >= level:
        return h[0][0]
    for (x0, y0), (x1, y1) in zip(h, h[1:], strict=False):
        if y1 >= level:
            return x0 + (x1 - x0) * (level - y0) / (y1 - y0)
    return None


def evaluate(points: Sequence[tuple[float, float]], a: Anchors) -> CostQuality:
    """Envelope metrics of a router's (cost/1k, quality) settings."""
    h = hull([a.normalise(c, q) for c, q in points])

    def cost(level: float) -> float | None:
        x = x_to_reach(h, level - 1e-12)
        return None if x is None else a.cost_at(x)

    level_95 = (0.95 * a.best_quality - a.cheap_quality) / (a.best_quality - a.cheap_quality)
    return CostQuality(
        area=area(h),
        cost_50=cost(0.5),
        cost_80=cost(0.8),
        cost_100=cost(1.0),
        cost_95_best=cost(level_95),
        hull=tuple(h),
    )
