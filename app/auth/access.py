"""Which models and policies a key may use.

A key's ``models`` limit both direct calls (``model: "gpt-5.5"``) and routing: a policy such
as ``auto`` only chooses among the key's models, so a restricted key can never be routed to
a model it may not call. ``policies`` limit which policy names it may send.
"""

from __future__ import annotations

from app.auth.config import ApiKey
from app.catalog.model import Catalog
from app.errors import PermissionDeniedError


def allowed_models(key: ApiKey | None, catalog: Catalog, name: str) -> frozenset[str] | None:
    """The models routing may use for ``name`` under ``key`` (``None`` = no restriction).

    Raise :class:`PermissionDeniedError` (403) when the key may not use ``name`` at all. An
    unknown ``name`` passes through, so the router answers it with its usual 404.
    """
    if key is None:
        return None
    if name in catalog.models:
        if key.models is not None and name not in key.models:
            raise PermissionDeniedError(
                f"the API key {key.name!r} may not use model {name!r}; it may use: "
                f"{_allowed_names(key, catalog)}",
                param="model",
            )
        return key.models
    if name in catalog.policies:
        if key.policies is not None and name not in key.policies:
            raise PermissionDeniedError(
                f"the API key {key.name!r} may not use routing policy {name!r}; it may use: "
                f"{_allowed_names(key, catalog)}",
                param="model",
            )
        return key.models
    return None


def visible_names(key: ApiKey | None, catalog: Catalog) -> tuple[frozenset[str], frozenset[str]]:
    """(models, policies) that ``GET /v1/models`` shows to ``key``."""
    models = frozenset(catalog.by_model)
    policies = frozenset(catalog.policies)
    if key is None:
        return models, policies
    if key.models is not None:
        models &= key.models
    if key.policies is not None:
        policies &= key.policies
    return models, policies


def _allowed_names(key: ApiKey, catalog: Catalog) -> str:
    models, policies = visible_names(key, catalog)
    return ", ".join(sorted(models) + sorted(policies)) or "nothing (ask the admin)"
