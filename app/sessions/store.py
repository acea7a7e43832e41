"""The session store protocol and what it stores for a conversation.

A store maps a hashed session key to a :class:`SessionEntry`: the deployment that served the
conversation last and the route (catalog model or policy name) the client asked for. Nothing
else: no prompt text, no ids in clear. Entries expire ``ttl_s`` after the last turn that was
served: reading one does not keep it alive, so a request refused before it is served (rate
limit, budget, bad input) leaves the session as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """Where a conversation was served last, and under which route."""

    deployment: str
    route: str

    def encode(self) -> bytes:
        return orjson.dumps({"d": self.deployment, "r": self.route})

    @classmethod
    def decode(cls, raw: bytes | str) -> SessionEntry | None:
        """The entry in ``raw``, or None when it is not one (a foreign or corrupt value)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        deployment, route = data.get("d"), data.get("r")
        if not isinstance(deployment, str) or not isinstance(route, str):
            return None
        return cls(deployment, route)


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A cheap snapshot for health checks and metrics.

    ``backend`` is ``redis`` or ``memory``; ``degraded`` is true while Redis is unreachable and
    the local store serves instead; ``incidents`` counts outages since start, ``errors`` the
    failed Redis operations.
    """

    backend: str
    degraded: bool = False
    incidents: int = 0
    errors: int = 0


class SessionStore(Protocol):
    """Hashed session key → :class:`SessionEntry`, with a TTL refreshed by every served turn."""

    async def get(self, key: str) -> SessionEntry | None:
        """The entry for ``key`` (one round trip), or None; its TTL is left as it is."""
        ...

    async def put(self, key: str, entry: SessionEntry) -> None:
        """Store ``entry`` under ``key`` with a fresh TTL."""
        ...

    def refresh(self, key: str, entry: SessionEntry) -> None:
        """Keep ``entry`` under ``key`` for another TTL, without waiting for the write (a
        served turn whose conversation stayed put; never raises)."""
        ...

    def status(self) -> StoreStatus:
        """The store's health, without I/O."""
        ...
