"""Budget-aware routing: how much harder cost weighs as a key nears its budget.

Pure: the gateway passes the result to the router as ``budget_factor`` (a multiplier of
``lambda_cost``), so routing itself stays free of I/O and of any notion of keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.auth.config import BudgetPressureSpec
from app.catalog.model import Catalog


def pressure_factor(pressure: BudgetPressureSpec | None, used: float | None) -> float:
    """1 below ``start``, rising linearly to ``max_factor`` when the budget is used up."""
    if pressure is None or used is None or used <= pressure.start:
        return 1.0
    share = min(1.0, (used - pressure.start) / (1.0 - pressure.start))
    return 1.0 + (pressure.max_factor - 1.0) * share


def policy_name(
    catalog: Catalog, body: Mapping[str, Any], headers: Mapping[str, str]
) -> str | None:
    """The policy a request routes under: an override, else ``model`` if it names a policy,
    else the catalog's default policy."""
    override = headers.get("x-pareto-policy")
    extra = body.get("pareto")
    if override is None and isinstance(extra, dict) and isinstance(extra.get("policy"), str):
        override = extra["policy"]
    if override is not None:
        return override
    model = body.get("model")
    if isinstance(model, str) and model in catalog.policies:
        return model
    return catalog.default_policy


def budget_factor(
    catalog: Catalog,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    used: float | None,
) -> float:
    """The ``lambda_cost`` multiplier for this request (1.0 when nothing applies)."""
    if used is None:
        return 1.0
    name = policy_name(catalog, body, headers)
    policy = catalog.policies.get(name) if name else None
    return pressure_factor(policy.budget_pressure if policy else None, used)
