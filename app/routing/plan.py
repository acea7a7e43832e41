"""The router's output: an ordered list of deployments, each with the reason it is there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.catalog.model import Deployment
from app.routing.sticky import StickyOutcome

if TYPE_CHECKING:
    from app.routing.features import Features
    from app.routing.policy import ResolvedPolicy

# Why an entry is in the plan (PlanEntry.reason).
CHOSEN = "best_utility"
BEST_EFFORT = "best_effort"
SAME_MODEL = "same_model_other_provider"
NEXT_BEST = "next_best_utility"
NEXT_BEST_DOMINATED = "next_best_utility_dominated"


@dataclass(slots=True)
class PlanEntry:
    """One deployment in the plan, with the estimates that put it there."""

    deployment: Deployment
    reason: str
    est_cost_usd: float
    est_latency_s: float
    utility: float | None = None
    quality: float | None = None


@dataclass(slots=True)
class Candidate:
    """One explain row: every deployment of the catalog with its numbers and status.

    ``status`` is ``chosen``, ``fallback``, ``dominated``, ``feasible`` (on the frontier but
    past the policy's ``max_fallbacks``) or ``excluded:<reason>``. ``sticky``: the session's
    deployment, whose numbers price the conversation's cached prefix warm.
    """

    deployment: str
    model: str
    quality: float
    est_cost_usd: float
    est_latency_s: float
    utility: float
    status: str
    detail: str | None = None
    sticky: bool = False

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "deployment": self.deployment,
            "model": self.model,
            "quality": round(self.quality, 3),
            "est_cost_usd": round(self.est_cost_usd, 8),
            "est_latency_s": round(self.est_latency_s, 4),
            "utility": round(self.utility, 4),
            "status": self.status,
        }
        if self.detail:
            row["detail"] = self.detail
        if self.sticky:
            row["sticky"] = True
        return row


@dataclass(slots=True)
class RoutePlan:
    """Primary first, then fallbacks in the order the reliability layer will try them."""

    entries: list[PlanEntry]
    policy: str | None = None
    quality_floor: float | None = None
    features: Features | None = None
    resolved: ResolvedPolicy | None = None
    candidates: list[Candidate] = field(default_factory=list)
    feasible: int = 0
    best_effort: bool = False
    # What the router did with the session's sticky deployment (None: no sticky session).
    sticky: StickyOutcome | None = None

    @property
    def primary(self) -> PlanEntry:
        return self.entries[0]

    @property
    def reason(self) -> str:
        """One line for the ``x-pareto-reason`` header: why the primary was chosen."""
        if not self.entries:
            return "no_feasible_deployment"
        top = self.entries[0]
        parts = [top.reason]
        if top.utility is not None:
            parts.append(f"U={top.utility:.2f}")
        if self.quality_floor is not None and self.resolved is not None:
            source = self.resolved.floor_source.split(":")[0]
            parts.append(f"floor={self.quality_floor:g} ({source})")
        parts.append(f"{self.feasible} feasible")
        return "; ".join(parts)

    def explain(self) -> dict[str, Any]:
        """The ``POST /v1/route`` body: features, resolved policy, one row per deployment."""
        return {
            "features": self.features.to_dict() if self.features else None,
            "policy": self.resolved.to_dict() if self.resolved else {"name": self.policy},
            "plan": [
                {
                    "deployment": e.deployment.id,
                    "reason": e.reason,
                    "est_cost_usd": round(e.est_cost_usd, 8),
                    "est_latency_s": round(e.est_latency_s, 4),
                }
                for e in self.entries
            ],
            "reason": self.reason,
            "session": self.sticky.to_dict() if self.sticky is not None else None,
            "candidates": [c.to_dict() for c in self.candidates],
        }
