"""Who is calling: ``Authorization: Bearer <key>`` → the :class:`ApiKey` it stands for.

The key is hashed once and looked up among the config's static keys, then (when Redis is
configured) among the keys managed at run time. Messages say what to fix and never contain
the presented key, not even a part of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import structlog
from redis.exceptions import RedisError

from app.auth.config import ApiKey, AuthConfig, hash_key
from app.errors import AuthenticationError, LimitsUnavailableError

log = structlog.get_logger("pareto.auth")

# Printable ASCII without spaces, the shape of any real API key; anything else is malformed.
_BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] +([\x21-\x7e]{8,512})$")
# How much of a refused key's hash its record keeps: enough to tell keys apart and to match a
# known key's stored hash, far too little to look the key up.
FINGERPRINT_HEX = 12


def presented_key(authorization: str | None) -> str | None:
    """The key of a well-formed ``Authorization: Bearer <key>`` header, else None."""
    if not authorization:
        return None
    match = _BEARER.match(authorization.strip())
    return match.group(1) if match is not None else None


def key_fingerprint(authorization: str | None) -> str | None:
    """``sha256:`` and the first hex digits of the presented key's hash (the form in which
    keys are stored), None when no well-formed key was sent. Never the key itself."""
    key = presented_key(authorization)
    return None if key is None else hash_key(key)[: len("sha256:") + FINGERPRINT_HEX]


class KeyLookup(Protocol):
    """Where run-time managed keys live (Redis); ``None`` for an unknown hash."""

    async def get(self, key_hash: str) -> ApiKey | None: ...


class Authenticator:
    """Turns an ``Authorization`` header into an :class:`ApiKey` (or ``None`` if auth is off)."""

    def __init__(self, config_of: Callable[[], AuthConfig], store: KeyLookup | None) -> None:
        self._config_of = config_of
        self._store = store

    async def authenticate(self, authorization: str | None) -> ApiKey | None:
        """Raise :class:`AuthenticationError` (401) for a missing, malformed, unknown or
        revoked key."""
        config = self._config_of()
        if not config.enabled:
            return None
        if not authorization or not authorization.strip():
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <key>' (the api_key of the "
                "OpenAI SDK); ask the gateway's admin for a key",
                code="missing_api_key",
            )
        presented = presented_key(authorization)
        if presented is None:
            raise AuthenticationError(
                "malformed Authorization header: expected 'Bearer <key>' with a key of 8-512 "
                "printable characters and no spaces",
                code="malformed_api_key",
            )
        key_hash = hash_key(presented)
        key = config.by_hash.get(key_hash)
        if key is None and self._store is not None:
            try:
                key = await self._store.get(key_hash)
            except (TimeoutError, RedisError, OSError) as exc:
                raise LimitsUnavailableError(
                    "the gateway cannot reach its key store (Redis) to check your key; retry "
                    "shortly",
                    headers={"retry-after": "1"},
                ) from exc
        if key is None:
            raise AuthenticationError(
                "invalid API key: this gateway does not know the key you sent; check it, or "
                "ask the gateway's admin for a new one",
                code="invalid_api_key",
            )
        if key.revoked:
            revoked = AuthenticationError(
                f"the API key named {key.name!r} has been revoked; ask the gateway's admin "
                "for a new one",
                code="revoked_api_key",
            )
            revoked.key_name = key.name
            raise revoked
        return key


def log_auth_state(config: AuthConfig, source: str, *, shared: bool) -> None:
    """Say loudly when authentication is off: anyone who reaches the port can spend money.

    ``shared`` says whether limits are counted in Redis (all replicas) or per process.
    """
    if config.enabled:
        log.info(
            "auth_enabled",
            config=source,
            static_keys=len(config.by_name),
            limits="shared (Redis)" if shared else "per process (no Redis)",
        )
        if not config.by_name and not shared:
            log.warning(
                "auth_no_usable_keys",
                message="authentication is on but no key can be accepted: add hashed keys under "
                "auth.keys (`pareto keys create --static --name NAME`), or set PARETO_REDIS_URL "
                "and PARETO_ADMIN_KEY to manage keys at run time; every /v1 request gets 401",
            )
        if not shared and any(k.has_budget or k.has_rate_limit for k in config.by_name.values()):
            log.warning(
                "limits_per_process",
                message="no PARETO_REDIS_URL: budgets and rate limits are counted by each "
                "process alone; N replicas allow N times the configured limits",
            )
    else:
        log.warning(
            "auth_disabled",
            config=source,
            message="AUTHENTICATION IS OFF (auth.enabled: false): every client can call every "
            "model with no key, budget or rate limit. Use this only for local demos.",
        )
