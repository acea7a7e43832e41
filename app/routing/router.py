"""Builds a :class:`RoutePlan` for a request. (Core version: cheapest healthy first.)"""

from __future__ import annotations

from typing import Any

from app.catalog.model import Catalog
from app.errors import ModelNotFoundError, NoFeasibleDeploymentError, PermissionDeniedError
from app.routing.plan import PlanEntry, RoutePlan
from app.tokens import estimate_messages_tokens


def _n_out(body: dict[str, Any]) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit if isinstance(limit, int) and limit > 0 else 256


def plan_request(
    catalog: Catalog, body: dict[str, Any], allowed_models: frozenset[str] | None = None
) -> RoutePlan:
    """Deployments of the named model, cheapest first; a policy name routes among all.

    ``allowed_models`` (the caller's key) limits the models a policy may choose among.
    """
    name = str(body.get("model"))
    n_in = estimate_messages_tokens(body.get("messages") or [])
    n_out = _n_out(body)
    if name in catalog.by_model:
        deployments = list(catalog.by_model[name])
        policy = None
    elif name in catalog.policies:
        policy = name
        allowed = catalog.policies[name].models
        deployments = [
            d
            for d in catalog.deployments
            if (allowed is None or d.model.name in allowed)
            and (allowed_models is None or d.model.name in allowed_models)
        ]
    else:
        raise ModelNotFoundError(
            f"model {name!r} does not exist; use one of: {', '.join(catalog.names())}",
            param="model",
        )
    if not deployments and policy is not None and allowed_models is not None:
        raise PermissionDeniedError(
            f"policy {name!r} has no model that your API key may use; call one of your "
            "key's models directly, or ask the admin to widen the key",
            param="model",
        )
    if not deployments:
        raise NoFeasibleDeploymentError(
            f"model {name!r} has no enabled deployment; check the gateway's provider keys",
            param="model",
        )
    entries = [
        PlanEntry(
            d,
            "cheapest" if i == 0 else "fallback",
            d.static_cost_usd(n_in, n_out),
            d.static_latency_s(n_out),
        )
        for i, d in enumerate(sorted(deployments, key=lambda d: d.static_cost_usd(n_in, n_out)))
    ]
    return RoutePlan(entries=entries, policy=policy)
