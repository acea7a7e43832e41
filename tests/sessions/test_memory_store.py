"""The in-memory store: TTL refreshed on use, bounded LRU, driven by a fake clock."""

from __future__ import annotations

from app.sessions.memory import MemorySessionStore
from app.sessions.store import SessionEntry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ENTRY = SessionEntry("m@a", "auto")


async def test_entry_expires_after_ttl_of_idleness_and_use_refreshes_it() -> None:
    clock = Clock()
    store = MemorySessionStore(ttl_s=10, clock=clock)
    await store.put("k", ENTRY)
    clock.now += 9
    assert await store.touch("k") == ENTRY  # used at t+9: lives until t+19
    clock.now += 9
    assert await store.touch("k") == ENTRY
    clock.now += 10.5
    assert await store.touch("k") is None
    assert len(store) == 0


async def test_least_recently_used_is_evicted_at_the_bound() -> None:
    store = MemorySessionStore(ttl_s=60, max_entries=2, clock=Clock())
    await store.put("a", ENTRY)
    await store.put("b", ENTRY)
    await store.touch("a")  # b is now the least recently used
    await store.put("c", ENTRY)
    assert await store.touch("b") is None
    assert await store.touch("a") == ENTRY
    assert await store.touch("c") == ENTRY
    assert store.status().backend == "memory"
