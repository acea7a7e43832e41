"""The session layer of a request: look up the conversation before routing, remember after.

:meth:`Sessions.lookup` derives the hashed key, reads the store (one round trip, a
read only: a request refused after it, e.g. by its key's rate limit, leaves the session
as it was) and turns the entry into the router's :class:`Sticky` input.
:meth:`Sessions.remember`, once a deployment has taken the turn, awaits a write only when the
conversation moved (another deployment or route) or is new; one that stays put is renewed
with a write nobody waits for, so it costs one awaited round trip per turn (the lookup).
Neither ever raises for a store failure: the store degrades on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.routing.sticky import Sticky, StickyOutcome, SwitchReason
from app.sessions.keys import SessionKey, session_key
from app.sessions.store import SessionEntry, SessionStore, StoreStatus
from app.tokens import estimate_messages_tokens


def expected_cached_tokens(messages: list[Any]) -> int:
    """Prompt tokens a provider cache holds from the previous turn: the prompt before the
    latest assistant message (last turn's whole prompt), or 0 for a first turn."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return estimate_messages_tokens(messages[:i])
    return 0


def session_route(model: str, policy: str | None) -> str:
    """What the client asked to be routed under: the model name and the resolved policy."""
    return model if policy is None or policy == model else f"{model}/{policy}"


def _has_history(messages: list[Any]) -> bool:
    return any(isinstance(m, Mapping) and m.get("role") == "assistant" for m in messages)


@dataclass(frozen=True, slots=True)
class SessionLookup:
    """One request's session: its key, the stored entry, and the router input built from it."""

    key: SessionKey | None
    entry: SessionEntry | None = None
    sticky: Sticky | None = None
    expired: bool = False

    def outcome(
        self, served: str, route: str, router: StickyOutcome | None = None
    ) -> tuple[bool | None, SwitchReason | None]:
        """``(session_sticky, session_switch_reason)`` for the record.

        ``served`` is the deployment that answered, ``route`` the model/policy this request
        was routed under, ``router`` what the router did with the sticky deployment.
        """
        if self.key is None:
            return None, None
        if self.entry is None:
            return False, "expired" if self.expired else None
        if served == self.entry.deployment:
            return True, None
        if router is not None and not router.kept:
            if self.entry.route != route:
                return False, "policy_changed"
            return False, router.switch_reason or "better_utility"
        # The router kept it, but it failed and a fallback served: it was unhealthy.
        return False, "unhealthy"


class Sessions:
    """Session stickiness for the gateway; ``store=None`` turns it off."""

    def __init__(self, store: SessionStore | None, *, use_user_field: bool = True) -> None:
        self.store = store
        self._use_user_field = use_user_field

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def status(self) -> StoreStatus | None:
        return self.store.status() if self.store is not None else None

    async def lookup(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> SessionLookup:
        """The request's session (raises only for a malformed session id)."""
        if self.store is None:
            return _NO_SESSION
        key = session_key(headers, body, use_user_field=self._use_user_field)
        if key is None:
            return _NO_SESSION
        return await self._lookup(key, body)

    def prefetch(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> asyncio.Task[SessionLookup] | None:
        """Start the lookup now when it is a network round trip (None otherwise), so its
        command goes out in the same write as the caller's next Redis command (the rate-limit
        check): the hot-path client sends what is queued in one loop iteration together.
        A malformed session id raises here, as :meth:`lookup` would."""
        if self.store is None or not getattr(self.store, "remote", False):
            return None
        key = session_key(headers, body, use_user_field=self._use_user_field)
        if key is None:
            return None
        return asyncio.ensure_future(self._lookup(key, body))

    async def _lookup(self, key: SessionKey, body: Mapping[str, Any]) -> SessionLookup:
        assert self.store is not None
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        entry = await self.store.get(key.digest)
        if entry is None:
            return SessionLookup(key=key, expired=_has_history(messages))
        sticky = Sticky(entry.deployment, expected_cached_tokens(messages))
        return SessionLookup(key=key, entry=entry, sticky=sticky)

    async def remember(self, lookup: SessionLookup, served: str, route: str) -> None:
        """Record who served this turn: the session lives another TTL from here."""
        if self.store is None or lookup.key is None:
            return
        entry = lookup.entry
        if entry is not None and entry.deployment == served and entry.route == route:
            self.store.refresh(lookup.key.digest, entry)  # unchanged: renewed, not awaited
            return
        await self.store.put(lookup.key.digest, SessionEntry(served, route))


_NO_SESSION = SessionLookup(key=None)
