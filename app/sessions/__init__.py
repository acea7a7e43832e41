"""Session stickiness: session keys, stores (Redis, in-memory) and the per-request layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.sessions.keys import SESSION_HEADER, SessionKey, session_key
from app.sessions.manager import (
    SessionLookup,
    Sessions,
    expected_cached_tokens,
    session_route,
)
from app.sessions.memory import MemorySessionStore
from app.sessions.redis_store import RedisSessionStore
from app.sessions.store import SessionEntry, SessionStore, StoreStatus
from app.settings import Settings

if TYPE_CHECKING:
    from app.fastredis import FastRedis


def build_sessions(settings: Settings, redis: FastRedis | None) -> Sessions:
    """The process's session layer: off, in-memory, or Redis with a local fallback.

    ``redis`` is the hot-path client (:mod:`app.fastredis`): a lookup runs on every request.
    """
    if not settings.sessions_enabled:
        return Sessions(None)
    local = MemorySessionStore(settings.session_ttl_s, settings.session_memory_max_entries)
    store: SessionStore = local
    if redis is not None:
        store = RedisSessionStore(
            redis,
            ttl_s=settings.session_ttl_s,
            prefix=settings.session_key_prefix,
            retry_after_s=settings.session_redis_retry_s,
            local=local,
        )
    return Sessions(store, use_user_field=settings.session_use_user_field)


__all__ = [
    "SESSION_HEADER",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionEntry",
    "SessionKey",
    "SessionLookup",
    "SessionStore",
    "Sessions",
    "StoreStatus",
    "build_sessions",
    "expected_cached_tokens",
    "session_key",
    "session_route",
]
