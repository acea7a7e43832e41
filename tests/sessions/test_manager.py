"""The per-request session layer: lookup → router input, outcome → record, write only on moves."""

from __future__ import annotations

from typing import Any

from app.routing.sticky import StickyOutcome
from app.sessions import MemorySessionStore, SessionEntry, Sessions, expected_cached_tokens
from app.tokens import estimate_messages_tokens

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief. " * 20},
    {"role": "user", "content": "First question " * 10},
    {"role": "assistant", "content": "First answer " * 30},
    {"role": "user", "content": "Second question"},
]


class CountingStore(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__(ttl_s=60)
        self.puts = 0

    async def put(self, key: str, entry: SessionEntry) -> None:
        self.puts += 1
        await super().put(key, entry)


def test_expected_cached_prefix_is_last_turns_prompt() -> None:
    assert expected_cached_tokens(HISTORY[:2]) == 0
    assert expected_cached_tokens(HISTORY) == estimate_messages_tokens(HISTORY[:2])


async def test_lookup_gives_the_router_the_deployment_and_cached_prefix() -> None:
    sessions = Sessions(MemorySessionStore(60))
    body = {"model": "auto", "messages": HISTORY}
    first = await sessions.lookup(body, {"x-pareto-session-id": "s"})
    assert first.sticky is None and first.expired  # history but no entry
    await sessions.remember(first, "m@a", "auto")
    again = await sessions.lookup(body, {"x-pareto-session-id": "s"})
    assert again.sticky is not None
    assert again.sticky.deployment_id == "m@a"
    assert again.sticky.cached_input_tokens == estimate_messages_tokens(HISTORY[:2])


async def test_writes_only_when_the_conversation_moves() -> None:
    store = CountingStore()
    sessions = Sessions(store)
    body = {"model": "auto", "messages": HISTORY[:2]}
    headers = {"x-pareto-session-id": "s"}
    await sessions.remember(await sessions.lookup(body, headers), "m@a", "auto")
    for _ in range(5):
        await sessions.remember(await sessions.lookup(body, headers), "m@a", "auto")
    assert store.puts == 1
    await sessions.remember(await sessions.lookup(body, headers), "m@b", "auto")
    await sessions.remember(await sessions.lookup(body, headers), "m@b", "cheap")
    assert store.puts == 3


async def test_outcome_names_the_reason_for_every_switch() -> None:
    sessions = Sessions(MemorySessionStore(60))
    headers = {"x-pareto-session-id": "s"}
    body = {"model": "auto", "messages": HISTORY}
    await sessions.remember(await sessions.lookup(body, headers), "m@a", "auto")
    found = await sessions.lookup(body, headers)
    assert found.outcome("m@a", "auto") == (True, None)
    moved = StickyOutcome("m@a", kept=False, switch_reason="better_utility")
    assert found.outcome("m@b", "auto", moved) == (False, "better_utility")
    assert found.outcome("m@b", "cheap", moved) == (False, "policy_changed")
    kept = StickyOutcome("m@a", kept=True)
    assert found.outcome("m@b", "auto", kept) == (False, "unhealthy")  # failed over
    no_key = await sessions.lookup({"model": "auto", "messages": [HISTORY[0]]}, {})
    assert no_key.outcome("m@a", "auto") == (None, None)
    assert await Sessions(None).lookup(body, headers) == no_key
