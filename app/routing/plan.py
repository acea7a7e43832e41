"""The router's output: an ordered list of deployments, each with the reason it is there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.catalog.model import Deployment


@dataclass(slots=True)
class PlanEntry:
    """One deployment in the plan, with the estimates that put it there."""

    deployment: Deployment
    reason: str
    est_cost_usd: float
    est_latency_s: float
    utility: float | None = None


@dataclass(slots=True)
class RoutePlan:
    """Primary first, then fallbacks in the order the reliability layer will try them."""

    entries: list[PlanEntry]
    policy: str | None = None
    quality_floor: float | None = None
    features: Any = None
    explain: list[dict[str, Any]] = field(default_factory=list)

    @property
    def primary(self) -> PlanEntry:
        return self.entries[0]
