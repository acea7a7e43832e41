"""Policy resolution: a named policy + the request's features and overrides -> numbers.

:func:`resolve_policy` is the ONE place where the numbers a decision uses are decided
(lambdas, floor, ceilings, best effort, fallbacks). Anything that wants to bend them — a
budget that scales ``lambda_cost``, a tenant default — goes through its arguments, so
``/v1/route`` and the proxied request always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.catalog.model import FloorRule, Policy
from app.routing.features import Features
from app.routing.overrides import NO_OVERRIDES, Overrides


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """The numbers one routing decision uses. Lambdas: quality points per USD / per second."""

    name: str
    lambda_cost: float
    lambda_latency: float
    quality_floor: float
    floor_source: str  # "policy" | "override" | "heuristic: <rule>" | "none"
    max_cost_usd: float | None
    max_latency_s: float | None
    best_effort: bool
    models: frozenset[str] | None
    max_fallbacks: int
    overrides: tuple[str, ...] = ()
    # The policy's Anthropic prompt caching (None = each deployment's setting): deployments
    # that cache the prompt bill uncached input at the cache-write price (the estimate too).
    prompt_cache: bool | None = None
    # The key's budget pressure (app.auth.pressure), already multiplied into lambda_cost.
    budget_factor: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lambda_cost": self.lambda_cost,
            "budget_factor": self.budget_factor,
            "lambda_latency": self.lambda_latency,
            "quality_floor": self.quality_floor,
            "quality_floor_source": self.floor_source,
            "max_cost_usd": self.max_cost_usd,
            "max_latency_ms": None if self.max_latency_s is None else self.max_latency_s * 1000,
            "best_effort": self.best_effort,
            "models": sorted(self.models) if self.models is not None else None,
            "max_fallbacks": self.max_fallbacks,
            "overrides": list(self.overrides),
        }


def heuristic_floor(rules: Sequence[FloorRule], features: Features) -> tuple[float, str]:
    """The first matching rule's floor and a description (the rule's index in
    ``routing.quality_floor_rules``); ``(0, "heuristic: no rule matched")``."""
    category, difficulty, n_in = features.category, features.difficulty, features.input_tokens
    for n, rule in enumerate(rules):
        if rule.matches(category, difficulty, n_in):
            return rule.floor, f"heuristic: {category}/{difficulty}, rule {n}"
    return 0.0, "heuristic: no rule matched"


def quality_floor(
    policy: Policy,
    features: Features,
    rules: Sequence[FloorRule],
    overrides: Overrides = NO_OVERRIDES,
    *,
    pinned_model: str | None = None,
) -> tuple[float, str]:
    """The request's quality floor and where it comes from (``ResolvedPolicy.floor_source``):
    the override, none for a pinned model, the heuristic rules, or the policy's number."""
    if overrides.quality_floor is not None:
        return overrides.quality_floor, "override"
    if pinned_model is not None:
        return 0.0, "none: model pinned"
    if policy.quality_floor == "heuristic":
        return heuristic_floor(rules, features)
    if isinstance(policy.quality_floor, int | float):
        return float(policy.quality_floor), "policy"
    return 0.0, "none"


def resolve_policy(
    policy: Policy,
    features: Features,
    rules: Sequence[FloorRule],
    overrides: Overrides = NO_OVERRIDES,
    *,
    pinned_model: str | None = None,
    budget_factor: float = 1.0,
    allowed_models: frozenset[str] | None = None,
) -> ResolvedPolicy:
    """Resolve ``policy`` for one request.

    ``pinned_model``: the client named a concrete model, so routing is among its deployments
    and no quality floor applies unless the request sets one. ``budget_factor`` (>= 1 makes
    cost weigh more) multiplies ``lambda_cost`` after overrides, e.g. for a key near its budget.
    ``allowed_models`` (the caller's API key) narrows the policy's models.
    """
    used: list[str] = []
    floor, source = quality_floor(policy, features, rules, overrides, pinned_model=pinned_model)
    if overrides.quality_floor is not None:
        used.append("quality_floor")
    lambda_cost = policy.lambda_cost
    if overrides.lambda_cost is not None:
        lambda_cost = overrides.lambda_cost
        used.append("lambda_cost")
    lambda_latency = policy.lambda_latency
    if overrides.lambda_latency is not None:
        lambda_latency = overrides.lambda_latency
        used.append("lambda_latency")
    max_cost = policy.max_cost_usd
    if overrides.max_cost_usd is not None:
        max_cost = overrides.max_cost_usd
        used.append("max_cost_usd")
    max_latency_ms = policy.max_latency_ms
    if overrides.max_latency_ms is not None:
        max_latency_ms = overrides.max_latency_ms
        used.append("max_latency_ms")
    if overrides.policy is not None:
        used.insert(0, "policy")
    models = policy.models
    if pinned_model is not None:
        models = frozenset({pinned_model})
    elif allowed_models is not None:
        models = allowed_models if models is None else models & allowed_models
    return ResolvedPolicy(
        name=policy.name,
        lambda_cost=lambda_cost * budget_factor,
        budget_factor=budget_factor,
        lambda_latency=lambda_latency,
        quality_floor=floor,
        floor_source=source,
        max_cost_usd=max_cost,
        max_latency_s=None if max_latency_ms is None else max_latency_ms / 1000,
        best_effort=policy.best_effort,
        models=models,
        max_fallbacks=policy.max_fallbacks,
        overrides=tuple(used),
        prompt_cache=policy.prompt_cache,
    )
