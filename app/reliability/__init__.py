"""Reliability failover: the attempt walk, retries, timeouts and circuit breakers.

Kept apart from cost cascades: this package answers "this deployment failed, who serves the
request now?". See the README's Reliability section for the behaviour and its defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.reliability.breaker import BreakerConfig
from app.reliability.clock import Clock, ManualClock
from app.reliability.failover import Failover, OpenedStream, close_quietly
from app.reliability.limits import Defaults, request_limits
from app.reliability.outcome import Walk
from app.reliability.shared import Breakers
from app.settings import Settings


def breaker_config(settings: Settings) -> BreakerConfig:
    """The breaker thresholds from the process settings."""
    return BreakerConfig(
        failures=settings.breaker_failures,
        error_rate=settings.breaker_error_rate,
        window_s=settings.breaker_window_s,
        min_requests=settings.breaker_min_requests,
        open_s=settings.breaker_open_s,
        probe_timeout_s=max(settings.first_token_timeout_s, settings.breaker_open_s),
    )


def build_breakers(
    settings: Settings,
    redis: Any,
    clock: Clock | None = None,
    on_open: Callable[[str, str], None] | None = None,
) -> Breakers:
    """The process's breaker board: shared through ``redis`` when given, else local.

    ``on_open(deployment, cause)`` is called when this process opens a breaker (a metric).
    """
    return Breakers(
        breaker_config(settings),
        redis=redis,
        prefix=settings.breaker_redis_prefix,
        clock=clock,
        sync_s=settings.breaker_sync_s,
        on_trip=on_open,
    )


__all__ = [
    "BreakerConfig",
    "Breakers",
    "Defaults",
    "Failover",
    "ManualClock",
    "OpenedStream",
    "Walk",
    "breaker_config",
    "build_breakers",
    "close_quietly",
    "request_limits",
]
