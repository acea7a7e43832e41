"""Where a request's time goes: upstream waits and client waits, measured cheaply.

``gateway_overhead_ms`` is what is left of the total latency once the time spent waiting on
upstreams (``record.upstream_ms``) and, for streams, on a slow client
(``record.client_wait_ms``) is taken out. :func:`upstream_call` adds an awaited call's wait to
the record for two ``perf_counter`` calls; a stream's waits are added the same way, inline, by
the relay that pulls its chunks (``Gateway._relay``), so they cost no extra hop per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

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
