"""Clocks the reliability layer reads, injectable so tests drive time without sleeping.

Breakers use wall-clock seconds (``time.time``) because replicas sharing one Redis must agree
on when a breaker opened; deadlines use the monotonic clock of this process.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything with ``now() -> seconds``."""

    def now(self) -> float: ...


class WallClock:
    """Seconds since the epoch: comparable across processes and hosts (breakers)."""

    def now(self) -> float:
        return time.time()


class MonotonicClock:
    """This process's monotonic seconds (deadlines, backoff)."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to: ``advance(seconds)``. For tests and benchmarks."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
