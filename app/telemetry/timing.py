"""Where a request's time goes: upstream waits and client waits, measured cheaply.

``gateway_overhead_ms`` is what is left of the total latency once the time spent waiting on
upstreams (``record.upstream_ms``) and, for streams, on a slow client
(``record.client_wait_ms``) is taken out. These helpers add those waits to the record; each
costs two ``perf_counter`` calls per await or per chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Generic, TypeVar

from app.telemetry.record import Record

T = TypeVar("T")
_clock = time.perf_counter


async def upstream_call(record: Record, call: Awaitable[T]) -> T:
    """Await one upstream call, adding its wall time (success or failure) to the record."""
    started = _clock()
    try:
        return await call
    finally:
        record.upstream_ms += (_clock() - started) * 1000


class UpstreamStream(Generic[T]):
    """An upstream's chunk iterator whose waits are added to ``record.upstream_ms``."""

    __slots__ = ("_source", "_record")

    def __init__(self, record: Record, source: AsyncIterator[T]) -> None:
        self._record = record
        self._source = source

    def __aiter__(self) -> UpstreamStream[T]:
        return self

    async def __anext__(self) -> T:
        started = _clock()
        try:
            return await self._source.__anext__()
        finally:
            self._record.upstream_ms += (_clock() - started) * 1000

    async def aclose(self) -> None:
        aclose: Any = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


class ClientStream:
    """The bytes sent to the client; time between handing a chunk out and being asked for
    the next one (the server writing it, the client reading it) goes to
    ``record.client_wait_ms``."""

    __slots__ = ("_source", "_record", "_handed")

    def __init__(self, record: Record, source: AsyncIterator[bytes]) -> None:
        self._record = record
        self._source = source
        self._handed = 0.0

    def __aiter__(self) -> ClientStream:
        return self

    async def __anext__(self) -> bytes:
        if self._handed:
            self._record.client_wait_ms += (_clock() - self._handed) * 1000
        chunk = await self._source.__anext__()
        self._handed = _clock()
        return chunk

    async def aclose(self) -> None:
        aclose: Any = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
