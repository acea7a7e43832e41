"""Recent requests' features keyed by request id: a bounded in-memory map, or Redis.

Entries are the JSON bytes of what the feedback record will hold (never the prompt text).
Memory keeps the last ``max_entries`` for ``ttl_s``; Redis keeps each for ``ttl_s`` (``SET
… PX``), so any replica can take feedback for a request another served. A Redis error never
fails a request: the entry is kept locally, and a lookup falls back to the local copy.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("pareto.feedback")
_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class RecentRequests(Protocol):
    """Where a request's features wait for feedback."""

    async def put(self, request_id: str, entry: bytes) -> None: ...

    async def get(self, request_id: str) -> bytes | None: ...


class MemoryRecent:
    """The last ``max_entries`` requests, each for at most ``ttl_s`` seconds."""

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, request_id: str, entry: bytes) -> None:
        items = self._items
        items[request_id] = (self._clock(), entry)
        items.move_to_end(request_id)
        while len(items) > self._max:
            items.popitem(last=False)

    async def get(self, request_id: str) -> bytes | None:
        item = self._items.get(request_id)
        if item is None:
            return None
        if self._clock() - item[0] > self._ttl:
            del self._items[request_id]
            return None
        return item[1]


class RedisRecent:
    """``SET prefix+id entry PX ttl`` / ``GET``, with a local copy for Redis outages."""

    def __init__(
        self,
        redis: Any,
        *,
        ttl_s: float,
        prefix: str,
        timeout_s: float,
        local: MemoryRecent,
    ) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._prefix = prefix
        self._timeout = timeout_s
        self._local = local

    async def put(self, request_id: str, entry: bytes) -> None:
        await self._local.put(request_id, entry)
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(self._prefix + request_id, entry, px=self._ttl_ms)
        except _REDIS_FAILURES as exc:
            log.warning("feedback_redis_error", op="set", error=type(exc).__name__)

    async def get(self, request_id: str) -> bytes | None:
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.get(self._prefix + request_id)
        except _REDIS_FAILURES as exc:
            log.warning("feedback_redis_error", op="get", error=type(exc).__name__)
            raw = None
        if raw is None:
            return await self._local.get(request_id)
        return bytes(raw)
