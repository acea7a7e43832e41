"""Session stickiness as a routing input and outcome (pure types, no I/O).

The session layer looks up where a conversation was served last and hands the router a
:class:`Sticky`: that deployment, and how many prompt tokens its provider cache should already
hold (the conversation so far). The router prices the sticky deployment's cached prefix at the
cached-input price, keeps it while it is healthy and feasible, and leaves it only when another
deployment's utility beats it by more than the cache is worth. The result is a
:class:`StickyOutcome` with one of :data:`SWITCH_REASONS` when the conversation moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

SwitchReason = Literal["unhealthy", "infeasible", "better_utility", "policy_changed", "expired"]

SWITCH_REASONS: Final[tuple[str, ...]] = (
    "unhealthy",  # the sticky deployment's breaker is open, or it failed and another served
    "infeasible",  # it lacks a capability, the context window, or breaks a ceiling / floor
    "better_utility",  # another deployment beats it by more than the warm cache is worth
    "policy_changed",  # the client asked for a different model or policy than last turn
    "expired",  # the conversation has history but its session entry is gone (TTL)
)


@dataclass(frozen=True, slots=True)
class Sticky:
    """Router input: the session's deployment and its expected cached prefix."""

    deployment_id: str
    cached_input_tokens: int


@dataclass(frozen=True, slots=True)
class StickyOutcome:
    """What the router did with a :class:`Sticky`.

    ``kept`` is true when the sticky deployment leads the plan. ``cache_value`` is the utility
    the warm cache is worth (λ_cost × the cached-input saving against the price the prefix
    would otherwise cost: input, or cache-write where it would be written); ``margin`` is how
    far the best
    other deployment's utility is above (positive) or below the sticky one's, warm-priced.
    """

    deployment: str
    kept: bool
    switch_reason: SwitchReason | None = None
    cache_value: float = 0.0
    margin: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``session`` object of ``POST /v1/route``."""
        return {
            "deployment": self.deployment,
            "kept": self.kept,
            "switch_reason": self.switch_reason,
            "cache_value": round(self.cache_value, 4),
            "margin": None if self.margin is None else round(self.margin, 4),
        }
