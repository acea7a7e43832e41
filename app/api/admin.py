"""``/admin/keys``: create, list and revoke gateway keys (guarded by ``PARETO_ADMIN_KEY``).

Run-time keys live in Redis (every replica sees them at once). Static keys from the config
are listed too, read-only. The new key is returned once, by the create call; only its hash
is stored.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from app.auth.config import ApiKey, BudgetSpec, RateLimitSpec, generate_key, hash_key
from app.auth.guard import Guard
from app.auth.ledger import NANO, Periods
from app.auth.middleware import require_admin_key
from app.auth.store import KeyExistsError, RedisKeyStore
from app.errors import InvalidRequestError, KeyConflictError, KeyNotFoundError

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"


async def admin_only(request: Request) -> None:
    """Dependency: every route here needs the admin key (a refusal is recorded)."""
    require_admin_key(request)


router = APIRouter(prefix="/admin/keys", dependencies=[Depends(admin_only)], tags=["admin"])


class KeyCreate(BaseModel):
    """A new run-time key: its name, what it may use, and its limits."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME_PATTERN, description="unique; shown in logs and records")
    models: list[str] | None = Field(default=None, description="allowed models; unset = all")
    policies: list[str] | None = Field(default=None, description="allowed policies; unset = all")
    budget: BudgetSpec | None = None
    rate_limit: RateLimitSpec | None = None


def _store(request: Request) -> RedisKeyStore:
    store: RedisKeyStore | None = request.app.state.key_store
    if store is None:
        raise KeyConflictError(
            "run-time keys need Redis (set PARETO_REDIS_URL); without Redis, put keys in the "
            "config's auth.keys (`pareto keys create --static --name NAME` prints an entry)",
            code="key_store_unavailable",
        )
    return store


async def _describe(request: Request, key: ApiKey) -> dict[str, Any]:
    guard: Guard = request.app.state.guard
    out = key.to_json()
    out.pop("key_hash")
    if key.has_budget:
        day, month = await guard.ledger.spend(key.name, Periods.at(guard.clock()))
        out["usage"] = {
            "today_usd": day.spent / NANO,
            "month_usd": month.spent / NANO,
            "held_usd": day.held / NANO,
        }
    return out


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@router.post("", status_code=201)
async def create_key(request: Request, spec: KeyCreate) -> Response:
    """Create a key; the response holds the key itself, once. Store it now."""
    catalog = request.app.state.gateway.catalog
    unknown = [m for m in spec.models or [] if m not in catalog.models]
    unknown += [p for p in spec.policies or [] if p not in catalog.policies]
    if unknown:
        raise InvalidRequestError(
            f"unknown models or policies: {', '.join(unknown)}; GET /v1/models lists them",
            param="models",
        )
    if spec.name in catalog.auth.by_name:
        raise KeyConflictError(
            f"a key named {spec.name!r} is defined in the config; pick another name",
        )
    secret = generate_key()
    budget = spec.budget or BudgetSpec()
    limit = spec.rate_limit or RateLimitSpec()
    key = ApiKey(
        name=spec.name,
        key_hash=hash_key(secret),
        models=frozenset(spec.models) if spec.models is not None else None,
        policies=frozenset(spec.policies) if spec.policies is not None else None,
        daily_usd=budget.daily_usd,
        monthly_usd=budget.monthly_usd,
        requests_per_minute=limit.requests_per_minute,
        tokens_per_minute=limit.tokens_per_minute,
        source="redis",
        created_at=time.time(),
    )
    try:
        await _store(request).create(key)
    except KeyExistsError as exc:
        raise KeyConflictError(
            f"a live key named {spec.name!r} exists; revoke it first or pick another name",
        ) from exc
    return _json({"key": secret, **(await _describe(request, key))}, status=201)


@router.get("")
async def list_keys(request: Request) -> Response:
    """Every key (config and run-time) with its limits and today's / this month's spend."""
    catalog = request.app.state.gateway.catalog
    keys = list(catalog.auth.by_name.values())
    if request.app.state.key_store is not None:
        keys += await request.app.state.key_store.list()
    return _json({"object": "list", "data": [await _describe(request, k) for k in keys]})


@router.delete("/{name}")
async def revoke_key(request: Request, name: str = Path(pattern=_NAME_PATTERN)) -> Response:
    """Revoke a run-time key: every replica refuses it from the next request on."""
    if name in request.app.state.gateway.catalog.auth.by_name:
        raise KeyConflictError(
            f"key {name!r} is defined in the config: set 'revoked: true' on it there (the "
            "gateway reloads the file by itself)",
            code="static_key",
        )
    key = await _store(request).revoke(name)
    if key is None:
        raise KeyNotFoundError(
            f"there is no key named {name!r}; GET /admin/keys lists them",
        )
    return _json({"name": key.name, "revoked": True})
