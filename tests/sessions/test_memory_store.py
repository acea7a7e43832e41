"""The in-memory store: TTL renewed by served turns (not reads), bounded LRU, fake clock."""

from __future__ import annotations

from app.sessions.memory import MemorySessionStore
from app.sessions.store import SessionEntry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ENTRY = SessionEntry("m@a", "auto")


async def test_entry_expires_after_ttl_of_idleness_and_a_served_turn_renews_it() -> None:
    clock = Clock()
    store = MemorySessionStore(ttl_s=10, clock=clock)
    await store.put("k", ENTRY)
    clock.now += 9
    assert await store.get("k") == ENTRY
    store.refresh("k", ENTRY)  # served at t+9: lives until t+19
    clock.now += 9
    assert await store.get("k") == ENTRY
    clock.now += 1.5  # a read at t+18 did not renew it
    assert await store.get("k") is None
    assert len(store) == 0


async def test_least_recently_served_is_evicted_at_the_bound() -> None:
    store = MemorySessionStore(ttl_s=60, max_entries=2, clock=Clock())
    await store.put("a", ENTRY)
    await store.put("b", ENTRY)
    await store.get("b")  # a read does not count as use
    store.refresh("a", ENTRY)  # b is now the least recently served
    await store.put("c", ENTRY)
    assert await store.get("b") is None
    assert await store.get("a") == ENTRY
    assert await store.get("c") == ENTRY
    assert store.status().backend == "memory"
