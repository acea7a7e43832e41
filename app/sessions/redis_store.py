"""Redis session store that never fails a request.

Each lookup is one round trip (``GET key``: a read only, so a request refused after its
lookup leaves the session's TTL alone); a write is one ``SET key value PX ttl``, awaited when
the conversation moved and sent without waiting when a served turn only renews it
(:meth:`RedisSessionStore.refresh`), at most once per ``renew_every_s`` (a tenth of the TTL)
per process: a session served here lives at least nine tenths of the TTL after its last
turn. All go through the hot-path client (:mod:`app.fastredis`), whose every call runs under
a tight deadline. On an error or timeout the store logs once per incident, marks itself
degraded, and serves from a local :class:`MemorySessionStore` that mirrors what this process
has served; it leaves Redis
alone for ``retry_after_s`` and then lets the next request probe it, so it resumes on its own
when Redis is back. Sessions written locally during the outage are copied back to Redis by
the next turn served on them after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from app.sessions.memory import MemorySessionStore
from app.sessions.store import SessionEntry, StoreStatus

if TYPE_CHECKING:
    from app.fastredis import FastRedis

# What a broken, slow or unreachable Redis raises (redis-py's classes, also from fastredis).
_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class RedisSessionStore:
    """Sessions in Redis under ``prefix``, with a local fallback while Redis is unreachable.

    The deadline of each operation is the client's (``PARETO_REDIS_TIMEOUT_S``).
    """

    remote = True  # a lookup is a network round trip (see Sessions.prefetch)

    def __init__(
        self,
        redis: FastRedis,
        *,
        ttl_s: float,
        prefix: str = "pareto:session:",
        retry_after_s: float = 1.0,
        local: MemorySessionStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._prefix = prefix
        self._retry_after_s = retry_after_s
        self._local = local if local is not None else MemorySessionStore(ttl_s, clock=clock)
        self._clock = clock
        self._skip_until = 0.0
        self._degraded_since: float | None = None
        self._incidents = 0
        self._errors = 0
        # Told True when an outage starts and False when it ends (e.g. a metrics gauge).
        self._on_degraded = on_degraded
        # Renewals sent and not yet answered (a reference, so a task is not collected).
        self._renewals: set[asyncio.Future[object]] = set()
        # A turn served on a session this process wrote or renewed less than this ago does
        # not renew it again (a conversation's turns seconds apart would send a SET each).
        self._renew_every_s = ttl_s / 10
        # Sessions Redis lacks while the local mirror holds them (served here during an
        # outage): their next turn copies them back whenever it comes.
        self._unsynced: set[str] = set()

    # -- health -----------------------------------------------------------------------------
    def status(self) -> StoreStatus:
        return StoreStatus(
            backend="redis",
            degraded=self._degraded_since is not None,
            incidents=self._incidents,
            errors=self._errors,
        )

    def _usable(self) -> bool:
        return self._clock() >= self._skip_until

    def _failed(self, op: str, exc: BaseException) -> None:
        now = self._clock()
        self._errors += 1
        self._skip_until = now + self._retry_after_s
        if self._degraded_since is None:
            self._degraded_since = now
            self._incidents += 1
            # Looked up per incident (rare), never cached across configurations.
            structlog.get_logger("pareto.sessions").warning(
                "session_store_degraded",
                operation=op,
                error=type(exc).__name__,
                detail=str(exc)[:200],
                fallback="local memory store",
                retry_after_s=self._retry_after_s,
            )
            if self._on_degraded is not None:
                self._on_degraded(True)

    def _succeeded(self) -> None:
        if self._degraded_since is not None:
            outage = self._clock() - self._degraded_since
            self._degraded_since = None
            structlog.get_logger("pareto.sessions").info(
                "session_store_recovered", outage_s=round(outage, 3)
            )
            if self._on_degraded is not None:
                self._on_degraded(False)

    # -- operations -------------------------------------------------------------------------
    async def get(self, key: str) -> SessionEntry | None:
        if not self._usable():
            return self._local.get_now(key)
        try:
            raw = await self._redis.execute("GET", self._prefix + key)
        except _REDIS_FAILURES as exc:
            self._failed("get", exc)
            return self._local.get_now(key)
        self._succeeded()
        if raw is None:
            # Served here while Redis was down (or lost by a Redis restart): the next served
            # turn's refresh copies it back.
            entry = self._local.get_now(key)
            if entry is not None:
                self._mark_unsynced(key)
            return entry
        return SessionEntry.decode(raw)

    def _mark_unsynced(self, key: str) -> None:
        if len(self._unsynced) >= 100_000:  # a long outage: forget, renew at the usual pace
            self._unsynced.clear()
        self._unsynced.add(key)

    async def put(self, key: str, entry: SessionEntry) -> None:
        self._local.put_now(key, entry)
        if self._usable() and await self._write(key, entry):
            self._unsynced.discard(key)  # Redis has it now: nothing left to copy back
        else:
            self._mark_unsynced(key)

    def refresh(self, key: str, entry: SessionEntry) -> None:
        """Renew the session for another TTL with a ``SET`` sent now and not waited for (off
        the caller's latency); a ``SET`` rather than ``PEXPIRE`` so that a session the local
        mirror kept through an outage is copied back. Skipped when this process wrote or
        renewed it less than ``renew_every_s`` ago (and Redis is known to have it)."""
        if key in self._unsynced:
            self._unsynced.discard(key)
        else:
            ago = self._local.written_ago(key, entry)
            if ago is not None and ago < self._renew_every_s:
                return
        self._local.put_now(key, entry)
        if not self._usable():
            self._mark_unsynced(key)
            return
        try:
            sent = asyncio.ensure_future(
                self._redis.execute("SET", self._prefix + key, entry.encode(), "PX", self._ttl_ms)
            )
        except _REDIS_FAILURES as exc:  # the connection is known to be gone
            self._failed("refresh", exc)
            self._mark_unsynced(key)
            return
        self._renewals.add(sent)
        sent.add_done_callback(partial(self._renewed, key))

    def _renewed(self, key: str, sent: asyncio.Future[object]) -> None:
        self._renewals.discard(sent)
        if sent.cancelled():
            self._mark_unsynced(key)
            return
        exc = sent.exception()
        if exc is None:
            self._succeeded()
        else:
            self._failed("refresh", exc)
            self._mark_unsynced(key)

    async def _write(self, key: str, entry: SessionEntry) -> bool:
        try:
            await self._redis.execute("SET", self._prefix + key, entry.encode(), "PX", self._ttl_ms)
        except _REDIS_FAILURES as exc:
            self._failed("put", exc)
            return False
        self._succeeded()
        return True
