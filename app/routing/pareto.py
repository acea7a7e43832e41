"""Pareto dominance on (quality ↑, cost ↓, latency ↓).

``a`` dominates ``b`` when ``q_a ≥ q_b``, ``c_a ≤ c_b``, ``l_a ≤ l_b`` and one is strict.

The planner never builds the full dominance matrix on the hot path: with non-negative
lambdas a dominating deployment has a utility at least as high as the one it dominates (and
IEEE rounding is monotonic, so that holds for the computed floats too). Walking the feasible
deployments by falling utility, a deployment can only be dominated by one seen before it or
by one with the same utility (up to rounding): ``plan_route`` checks just those.
"""

from __future__ import annotations

from collections.abc import Sequence


def dominates(qa: float, ca: float, la: float, qb: float, cb: float, lb: float) -> bool:
    """True when (qa, ca, la) Pareto-dominates (qb, cb, lb)."""
    return qa >= qb and ca <= cb and la <= lb and (qa > qb or ca < cb or la < lb)


def frontier(
    quality: Sequence[float], cost: Sequence[float], latency: Sequence[float]
) -> list[bool]:
    """Full O(n²) frontier membership (explain output and tests, not the hot path)."""
    n = len(quality)
    return [
        not any(
            dominates(quality[j], cost[j], latency[j], quality[i], cost[i], latency[i])
            for j in range(n)
            if j != i
        )
        for i in range(n)
    ]
