"""The circuit breaker state machine of one deployment, as a pure function of its state.

::

    closed ──(N consecutive failures, or error rate ≥ R over ≥ M calls in a window)──▶ open
    open ──(open_s elapsed; the next caller becomes the probe)──▶ half_open
    half_open ──(probe succeeds)──▶ closed        half_open ──(probe fails)──▶ open
    any ──(upstream 401/403: ``trip``)──▶ open

One half-open probe at a time; a probe that never reports (its client vanished) frees the
slot after ``probe_timeout_s``. :func:`apply` is the only place the rules live in Python; the
Lua script in :mod:`app.reliability.shared` is the same rules for state kept in Redis, and the
tests drive both through the same sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Op = Literal["acquire", "success", "failure", "trip", "release"]
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how long it stays open (README, Circuit breakers)."""

    failures: int = 5
    error_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 20
    open_s: float = 15.0
    probe_timeout_s: float = 30.0


@dataclass(slots=True)
class BreakerState:
    """One deployment's breaker. Times are the breaker clock's seconds."""

    state: str = CLOSED
    consecutive: int = 0
    window_start: float = 0.0
    window_total: int = 0
    window_failures: int = 0
    opened_at: float = 0.0
    probe_at: float = 0.0
    cause: str = ""

    def available(self, config: BreakerConfig, now: float) -> bool:
        """Would a request be let through now (without taking the half-open probe slot)?"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now - self.opened_at >= config.open_s
        return self.probe_at == 0.0 or now - self.probe_at >= config.probe_timeout_s

    def retry_in(self, config: BreakerConfig, now: float) -> float:
        """Seconds until this breaker lets a probe through (0 when it already would)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, config.open_s - (now - self.opened_at))


def _open(s: BreakerState, now: float, cause: str) -> None:
    s.state = OPEN
    s.opened_at = now
    s.probe_at = 0.0
    s.cause = cause
    s.consecutive = 0
    s.window_start = now
    s.window_total = 0
    s.window_failures = 0


def _count(s: BreakerState, config: BreakerConfig, now: float, failed: bool) -> None:
    if now - s.window_start >= config.window_s:
        s.window_start = now
        s.window_total = 0
        s.window_failures = 0
    s.window_total += 1
    if failed:
        s.window_failures += 1
        s.consecutive += 1
    else:
        s.consecutive = 0


def apply(s: BreakerState, op: Op, config: BreakerConfig, now: float, cause: str = "") -> bool:
    """Apply one operation in place; return whether the caller may call the deployment."""
    if op == "acquire":
        if s.state == OPEN:
            if now - s.opened_at < config.open_s:
                return False
            s.state = HALF_OPEN
            s.probe_at = now
            return True
        if s.state == HALF_OPEN:
            if s.probe_at and now - s.probe_at < config.probe_timeout_s:
                return False
            s.probe_at = now
        return True
    if op == "success":
        if s.state == HALF_OPEN:
            s.state = CLOSED
            s.cause = ""
            s.probe_at = 0.0
            s.consecutive = 0
            s.window_start = now
            s.window_total = 0
            s.window_failures = 0
        elif s.state == CLOSED:
            _count(s, config, now, failed=False)
    elif op == "failure":
        if s.state == HALF_OPEN:
            _open(s, now, "probe_failed")
        elif s.state == CLOSED:
            _count(s, config, now, failed=True)
            if s.consecutive >= config.failures:
                _open(s, now, "consecutive_failures")
            elif (
                s.window_total >= config.min_requests
                and s.window_failures >= config.error_rate * s.window_total
            ):
                _open(s, now, "error_rate")
    elif op == "trip":
        _open(s, now, cause or "tripped")
    elif op == "release" and s.state == HALF_OPEN:
        s.probe_at = 0.0
    return True
