"""In-memory session store: a bounded LRU whose entries expire after a TTL.

The embedded default when no Redis URL is set, and the local fallback while Redis is down.
The clock is injectable so tests drive expiry without sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from app.sessions.store import SessionEntry, StoreStatus


class MemorySessionStore:
    """At most ``max_entries`` sessions, least recently used evicted first."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[SessionEntry, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> SessionEntry | None:
        return self.get_now(key)

    def get_now(self, key: str) -> SessionEntry | None:
        """:meth:`get` without awaiting (the store never does I/O). Neither the TTL nor the
        LRU order moves: only a served turn (:meth:`put`, :meth:`refresh`) does that."""
        item = self._entries.get(key)
        if item is None:
            return None
        entry, expires = item
        if expires <= self._clock():
            del self._entries[key]
            return None
        return entry

    async def put(self, key: str, entry: SessionEntry) -> None:
        self.put_now(key, entry)

    def put_now(self, key: str, entry: SessionEntry) -> None:
        """:meth:`put` without awaiting."""
        self._entries[key] = (entry, self._clock() + self._ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def refresh(self, key: str, entry: SessionEntry) -> None:
        self.put_now(key, entry)

    def written_ago(self, key: str, entry: SessionEntry) -> float | None:
        """Seconds since ``key`` was last written or renewed here with ``entry`` (None: not
        held, or held with another entry)."""
        item = self._entries.get(key)
        if item is None or item[0] != entry:
            return None
        return self._clock() - (item[1] - self._ttl_s)

    def status(self) -> StoreStatus:
        return StoreStatus(backend="memory")
