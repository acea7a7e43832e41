"""Every deployment's circuit breaker, shared by all replicas through Redis when configured.

:class:`Breakers` keeps a local :class:`~app.reliability.breaker.BreakerState` per deployment.
Without Redis that is the state. With Redis, each operation runs one Lua script (the same
rules as :func:`~app.reliability.breaker.apply`, atomic on the server) and the local copy is
replaced by what Redis returned, so :meth:`Breakers.is_available` stays a cheap synchronous
read. The common case costs no round trip: a closed breaker with no failure in view whose
local copy was synced less than ``sync_s`` ago admits calls locally, and successes on a clean
closed breaker are counted locally and flushed with the next script call. Failures, trips
and every non-closed state go to Redis at once, so a replica learns of a breaker another
replica opened within ``sync_s``.

When Redis fails, the board *degrades*: it keeps deciding with its local copy, raises
``redis_degraded`` (a gauge), logs once, and tries Redis again every ``redis_retry_s``; the
first success switches back to the shared state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from app.reliability.breaker import (
    CLOSED,
    OPEN,
    BreakerConfig,
    BreakerState,
    Op,
    apply,
)
from app.reliability.clock import Clock, WallClock

log = structlog.get_logger("pareto.reliability")

_FIELDS = (
    "state",
    "consecutive",
    "window_start",
    "window_total",
    "window_failures",
    "opened_at",
    "probe_at",
    "cause",
)
# KEYS[1] = the deployment's hash. ARGV = op, now, failures, error_rate, window_s,
# min_requests, open_s, probe_timeout_s, cause, ttl_s, batched successes (counted before
# the op). Returns the fields above + allowed.
LUA = """
local k = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local failures = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local minreq = tonumber(ARGV[6])
local open_s = tonumber(ARGV[7])
local probe_s = tonumber(ARGV[8])
local h = redis.call('HMGET', k, 'state', 'consecutive', 'window_start', 'window_total',
  'window_failures', 'opened_at', 'probe_at', 'cause')
local state = h[1] or 'closed'
local consecutive = tonumber(h[2]) or 0
local wstart = tonumber(h[3]) or 0
local wtotal = tonumber(h[4]) or 0
local wfail = tonumber(h[5]) or 0
local opened = tonumber(h[6]) or 0
local probe = tonumber(h[7]) or 0
local cause = h[8] or ''
local allowed = 1
local batched = tonumber(ARGV[11]) or 0
if batched > 0 and state == 'closed' then
  if now - wstart >= window then wstart = now; wtotal = 0; wfail = 0 end
  wtotal = wtotal + batched; consecutive = 0
end
local function trip(why)
  state = 'open'; opened = now; probe = 0; cause = why
  consecutive = 0; wstart = now; wtotal = 0; wfail = 0
end
local function count(failed)
  if now - wstart >= window then wstart = now; wtotal = 0; wfail = 0 end
  wtotal = wtotal + 1
  if failed then wfail = wfail + 1; consecutive = consecutive + 1 else consecutive = 0 end
end
if op == 'acquire' then
  if state == 'open' then
    if now - opened < open_s then allowed = 0 else state = 'half_open'; probe = now end
  elseif state == 'half_open' then
    if probe > 0 and now - probe < probe_s then allowed = 0 else probe = now end
  end
elseif op == 'success' then
  if state == 'half_open' then
    state = 'closed'; cause = ''; probe = 0; consecutive = 0; wstart = now; wtotal = 0; wfail = 0
  elseif state == 'closed' then
    count(false)
  end
elseif op == 'failure' then
  if state == 'half_open' then
    trip('probe_failed')
  elseif state == 'closed' then
    count(true)
    if consecutive >= failures then trip('consecutive_failures')
    elseif wtotal >= minreq and wfail >= rate * wtotal then trip('error_rate') end
  end
elseif op == 'trip' then
  trip(ARGV[9] ~= '' and ARGV[9] or 'tripped')
elseif op == 'release' then
  if state == 'half_open' then probe = 0 end
end
redis.call('HSET', k, 'state', state, 'consecutive', consecutive,
  'window_start', tostring(wstart), 'window_total', wtotal, 'window_failures', wfail,
  'opened_at', tostring(opened), 'probe_at', tostring(probe), 'cause', cause)
redis.call('EXPIRE', k, tonumber(ARGV[10]))
return {state, tostring(consecutive), tostring(wstart), tostring(wtotal), tostring(wfail),
  tostring(opened), tostring(probe), cause, tostring(allowed)}
"""


def _decode(raw: list[Any]) -> tuple[BreakerState, bool]:
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    state = BreakerState(
        state=text[0],
        consecutive=int(float(text[1])),
        window_start=float(text[2]),
        window_total=int(float(text[3])),
        window_failures=int(float(text[4])),
        opened_at=float(text[5]),
        probe_at=float(text[6]),
        cause=text[7],
    )
    return state, text[8] == "1"


class Breakers:
    """The breaker board of one process: local, or shared through Redis with local fallback."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        redis: Any = None,
        prefix: str = "pareto:",
        clock: Clock | None = None,
        redis_retry_s: float = 1.0,
        ttl_s: int = 86_400,
        on_trip: Callable[[str, str], None] | None = None,
        sync_s: float = 1.0,
    ) -> None:
        self.config = config
        self._redis = redis
        self._prefix = f"{prefix}breaker:"
        self._clock = clock or WallClock()
        self._retry_s = redis_retry_s
        self._ttl = str(ttl_s)
        self._states: dict[str, BreakerState] = {}
        self._sync_s = sync_s
        self._synced_at: dict[str, float] = {}  # last time Redis confirmed this state
        self._batched: dict[str, int] = {}  # successes counted locally, not yet in Redis
        self._degraded = False
        self._retry_at = 0.0
        self._script: Any = redis.register_script(LUA) if redis is not None else None
        self._on_trip = on_trip or (lambda deployment, cause: None)
        self._args = (
            str(config.failures),
            repr(config.error_rate),
            repr(config.window_s),
            str(config.min_requests),
            repr(config.open_s),
            repr(config.probe_timeout_s),
        )
        # Operational counters, read by telemetry: (deployment, cause) -> times opened.
        self.opened_total: dict[tuple[str, str], int] = {}
        self.redis_failures_total = 0

    # -- cheap synchronous queries (routing, metrics) ------------------------------------
    @property
    def shared(self) -> bool:
        """True when state is shared through Redis right now (configured and not degraded)."""
        return self._redis is not None and not self._degraded

    @property
    def redis_degraded(self) -> bool:
        """True while Redis is configured but failing, so breakers are per process."""
        return self._degraded

    def is_available(self, deployment: str) -> bool:
        """Would this deployment be tried now? (Open and cooling down: no.)"""
        state = self._states.get(deployment)
        return state is None or state.available(self.config, self._clock.now())

    def unavailable(self) -> frozenset[str]:
        """Ids of deployments whose breaker currently sheds traffic."""
        now = self._clock.now()
        return frozenset(
            dep for dep, s in self._states.items() if not s.available(self.config, now)
        )

    def states(self) -> Mapping[str, str]:
        """``deployment -> closed | open | half_open`` for every deployment seen so far."""
        return {dep: s.state for dep, s in self._states.items()}

    def describe(self) -> str:
        """One line for ``/readyz``: where state lives, and which breakers shed traffic."""
        where = (
            "local"
            if self._redis is None
            else "redis (degraded: local state)"
            if self._degraded
            else "redis"
        )
        shedding = sorted(self.unavailable())
        return f"{where}; open: {', '.join(shedding)}" if shedding else where

    def retry_in(self, deployment: str) -> float:
        """Seconds until this deployment's breaker lets a probe through."""
        state = self._states.get(deployment)
        return 0.0 if state is None else state.retry_in(self.config, self._clock.now())

    # -- operations -----------------------------------------------------------------------
    async def acquire(self, deployment: str) -> bool:
        """Ask to call the deployment; False when its breaker is open (or probing)."""
        state = self._states.get(deployment)
        if state is None:
            if self._redis is None:
                return True  # the common case without Redis costs a dict lookup
        elif state.state == CLOSED and (
            self._redis is None
            or (state.consecutive == 0 and self._fresh(deployment, self._clock.now()))
        ):
            return True  # closed, no failure in view, recently confirmed: no round trip
        return await self._run(deployment, "acquire")

    def _fresh(self, deployment: str, now: float) -> bool:
        """The local copy may decide alone: recently synced, or Redis is down (retry later)."""
        if self._degraded:
            return now < self._retry_at
        return now - self._synced_at.get(deployment, -1e18) < self._sync_s

    async def success(self, deployment: str) -> None:
        if not self.success_nowait(deployment):
            await self._run(deployment, "success")

    def success_nowait(self, deployment: str) -> bool:
        """Count a success without I/O when that is all it takes (the healthy path); False
        when it needs :meth:`success` (a breaker to reset, shared through Redis)."""
        state = self._states.get(deployment)
        if self._redis is None:
            if state is None:
                state = self._states[deployment] = BreakerState()
            apply(state, "success", self.config, self._clock.now())
            return True
        if state is not None and state.state == CLOSED and state.consecutive == 0:
            # Nothing to reset: count it locally, flush with the next script call.
            apply(state, "success", self.config, self._clock.now())
            self._batched[deployment] = self._batched.get(deployment, 0) + 1
            return True
        return False

    async def failure(self, deployment: str) -> None:
        await self._run(deployment, "failure")

    async def trip(self, deployment: str, cause: str) -> None:
        """Open now: a failure that will not heal by itself (the upstream refused our key)."""
        await self._run(deployment, "trip", cause)

    async def release(self, deployment: str) -> None:
        """The call ended without a verdict (client gone): free a half-open probe slot."""
        await self._run(deployment, "release")

    async def _run(self, deployment: str, op: Op, cause: str = "") -> bool:
        now = self._clock.now()
        state = self._states.get(deployment)
        if state is None:
            state = self._states[deployment] = BreakerState()
        allowed = apply(state, op, self.config, now, cause)
        if self._redis is not None and (not self._degraded or now >= self._retry_at):
            shared = await self._shared(deployment, op, now, cause)
            if shared is not None:
                state, allowed = shared
                self._states[deployment] = state
        # Redis returns opened_at through Lua's tostring (14 significant digits, ~0.1 ms at
        # today's timestamps), so "opened by this call" is a comparison with tolerance.
        if state.state == OPEN and op in ("failure", "trip") and abs(state.opened_at - now) < 1e-3:
            key = (deployment, state.cause)
            self.opened_total[key] = self.opened_total.get(key, 0) + 1
            log.warning("circuit_opened", deployment=deployment, cause=state.cause)
            self._on_trip(deployment, state.cause)
        return allowed

    async def _shared(
        self, deployment: str, op: Op, now: float, cause: str
    ) -> tuple[BreakerState, bool] | None:
        batched = self._batched.get(deployment, 0)
        try:
            raw = await self._script(
                keys=[self._prefix + deployment],
                args=[op, repr(now), *self._args, cause, self._ttl, str(batched)],
            )
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to local state
            self.redis_failures_total += 1
            self._retry_at = now + self._retry_s
            if not self._degraded:
                self._degraded = True
                log.warning("breaker_redis_degraded", error=type(exc).__name__)
            return None
        if batched:
            self._batched[deployment] -= batched
        self._synced_at[deployment] = now
        if self._degraded:
            self._degraded = False
            log.info("breaker_redis_recovered")
        return _decode(raw)


__all__ = ["LUA", "Breakers"]
