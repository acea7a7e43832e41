"""The ``auth:`` section of the config: its YAML shape and the frozen runtime keys.

Keys are stored only as SHA-256 hashes. Gateway keys are long random tokens (``pk-`` plus 256
bits), so a fast hash is enough: there is nothing to brute-force that a slow KDF would
protect. Authentication is on unless the config says ``auth: {enabled: false}``.

This module imports nothing from the rest of the app: the catalog loader embeds
:class:`AuthSpec` in the config file's schema and compiles it with :func:`compile_auth`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

KEY_PREFIX = "pk-"
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of a gateway key: the only form in which a key is ever stored."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new gateway key: ``pk-`` plus 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def valid_key_name(name: str) -> bool:
    """Key names: 1-64 of letters, digits, ``.``, ``_``, ``-`` (safe as labels and in URLs)."""
    return bool(_NAME.match(name))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetSpec(_Spec):
    """Spend limits in USD, charged with each request's actual cost (UTC day / month)."""

    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)


class RateLimitSpec(_Spec):
    """Per-key rate limits; each allows a burst of one minute's worth, then a steady rate."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class KeySpec(_Spec):
    """One static gateway key. ``pareto keys create --static`` prints a ready entry."""

    hash: str = Field(description="sha256:<hex> of the key; never the key itself")
    models: list[str] | None = Field(default=None, description="allowed models; unset = all")
    policies: list[str] | None = Field(default=None, description="allowed policies; unset = all")
    budget: BudgetSpec | None = None
    rate_limit: RateLimitSpec | None = None
    revoked: bool = False

    @field_validator("hash")
    @classmethod
    def _hash_form(cls, value: str) -> str:
        if not _HASH.match(value):
            raise ValueError(
                "must be 'sha256:' followed by 64 lowercase hex digits (run `pareto keys create "
                "--static --name NAME` to get one); never put the key itself in the config"
            )
        return value


class BudgetPressureSpec(_Spec):
    """A policy option: as a key's budget fills from ``start`` to 100 %, ``lambda_cost`` is
    multiplied by up to ``max_factor`` (linearly), so routing turns to cheaper models before
    the hard stop (402)."""

    start: float = Field(default=0.5, ge=0, lt=1, description="fraction of the budget used")
    max_factor: float = Field(default=10.0, ge=1, description="lambda_cost multiplier at 100 %")


class AuthSpec(_Spec):
    """``auth:`` — on by default; ``enabled: false`` switches it off (demo configs only)."""

    enabled: bool = True
    keys: dict[str, KeySpec] = Field(default_factory=dict)

    @field_validator("keys")
    @classmethod
    def _names(cls, value: dict[str, KeySpec]) -> dict[str, KeySpec]:
        for name in value:
            if not valid_key_name(name):
                raise ValueError(
                    f"key name {name!r} must be 1-64 of letters, digits, '.', '_', '-'"
                )
        return value


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A gateway key as the request path sees it (no secret: only the hash)."""

    name: str
    key_hash: str
    models: frozenset[str] | None = None
    policies: frozenset[str] | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    revoked: bool = False
    source: Literal["config", "redis"] = "config"
    created_at: float | None = None

    @property
    def has_budget(self) -> bool:
        return self.daily_usd is not None or self.monthly_usd is not None

    @property
    def has_rate_limit(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def to_json(self) -> dict[str, Any]:
        """The stored / listed form (the hash is kept, the key never existed here)."""
        return {
            "name": self.name,
            "key_hash": self.key_hash,
            "models": sorted(self.models) if self.models is not None else None,
            "policies": sorted(self.policies) if self.policies is not None else None,
            "budget": {"daily_usd": self.daily_usd, "monthly_usd": self.monthly_usd},
            "rate_limit": {
                "requests_per_minute": self.requests_per_minute,
                "tokens_per_minute": self.tokens_per_minute,
            },
            "revoked": self.revoked,
            "source": self.source,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiKey:
        """Inverse of :meth:`to_json` (for keys stored in Redis)."""
        budget = data.get("budget") or {}
        limit = data.get("rate_limit") or {}
        models = data.get("models")
        policies = data.get("policies")
        return cls(
            name=str(data["name"]),
            key_hash=str(data["key_hash"]),
            models=frozenset(models) if models is not None else None,
            policies=frozenset(policies) if policies is not None else None,
            daily_usd=budget.get("daily_usd"),
            monthly_usd=budget.get("monthly_usd"),
            requests_per_minute=limit.get("requests_per_minute"),
            tokens_per_minute=limit.get("tokens_per_minute"),
            revoked=bool(data.get("revoked", False)),
            source="redis",
            created_at=data.get("created_at"),
        )


def key_from_spec(name: str, spec: KeySpec) -> ApiKey:
    """Compile one config entry."""
    budget = spec.budget or BudgetSpec()
    limit = spec.rate_limit or RateLimitSpec()
    return ApiKey(
        name=name,
        key_hash=spec.hash,
        models=frozenset(spec.models) if spec.models is not None else None,
        policies=frozenset(spec.policies) if spec.policies is not None else None,
        daily_usd=budget.daily_usd,
        monthly_usd=budget.monthly_usd,
        requests_per_minute=limit.requests_per_minute,
        tokens_per_minute=limit.tokens_per_minute,
        revoked=spec.revoked,
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Compiled ``auth:`` section: whether auth is on and the static keys by hash."""

    enabled: bool = True
    by_hash: Mapping[str, ApiKey] = field(default_factory=dict)
    by_name: Mapping[str, ApiKey] = field(default_factory=dict)


def compile_auth(spec: AuthSpec | None) -> AuthConfig:
    """No ``auth:`` section means auth on with no static keys (Redis-managed keys only)."""
    if spec is None:
        return AuthConfig()
    keys = [key_from_spec(name, k) for name, k in spec.keys.items()]
    return AuthConfig(
        enabled=spec.enabled,
        by_hash={k.key_hash: k for k in keys},
        by_name={k.name: k for k in keys},
    )
