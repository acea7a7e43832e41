"""Build the process's auth objects in the app's lifespan (one call from ``app.main``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.auth.authenticate import Authenticator, log_auth_state
from app.auth.config import AuthConfig
from app.auth.guard import Guard
from app.auth.ledger import Ledger, MemoryLedger, RedisLedger
from app.auth.store import RedisKeyStore
from app.fastredis import FastRedis
from app.settings import Settings


def install_auth(
    state: Any,
    auth_of: Callable[[], AuthConfig],
    settings: Settings,
    redis: Any,
    hot: FastRedis | None,
) -> None:
    """Put ``key_store``, ``authenticator`` and ``guard`` on ``app.state``; log auth's state.

    With Redis, run-time keys and every counter are shared by all replicas; without it,
    there are no run-time keys and limits are counted per process. The key store manages
    keys through redis-py (``redis``); the per-request key lookup and counters use the
    hot-path client (``hot``).
    """
    key_store = (
        RedisKeyStore(redis, settings.auth_key_prefix, hot=hot) if redis is not None else None
    )
    state.key_store = key_store
    state.authenticator = Authenticator(auth_of, key_store)
    ledger: Ledger = MemoryLedger()
    if hot is not None:
        ledger = RedisLedger(hot, settings.auth_key_prefix)
    state.guard = Guard(ledger)
    log_auth_state(auth_of(), str(settings.config), shared=redis is not None)
