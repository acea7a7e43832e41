"""Per-request enforcement of a key's rate limits and budgets.

The request's path through here::

    admit(key, body)   rate limits (requests, prompt tokens)       → 429 + Retry-After
    ticket.hold(est)   budget: hold the router's cost estimate     → 402 + Retry-After
    ticket.settle(rec) actual cost replaces the hold; actual tokens are charged

``settle`` runs once the response is complete (for streams, at the last byte or when the
client goes away) and also when the request failed, so a hold never outlives its request.
A counter store that cannot be reached fails closed (503): spend is real money.

A hold is recorded in the ledger under an id this ticket makes (:mod:`app.auth.ledger`), and
settling releases what that record holds, so a hold whose outcome is unknown can still be
released: when the hold's call fails (its reply missed ``PARETO_REDIS_TIMEOUT_S``, the
connection dropped after it was sent) or is cancelled, Redis may have applied it. A failed
hold fires a *release by id* in the background, retried a few times, and the client gets its
503 without waiting for it; a cancelled hold is released by the request's settle.

A settle is applied at most once under its own id (the hold id, or a fresh one when nothing
was held), so a settle whose outcome is unknown is sent again, in the background on the same
retry schedule, with the same id: the cost is charged once whether or not the first attempt
was applied, and the log line says whether it was. Whatever is never settled (the worker
died, Redis stayed away through every retry) stops counting when the record expires,
``HOLD_GRACE_S`` after the request's deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from app.auth.config import ApiKey
from app.auth.ledger import NANO, Ledger, Limits, Periods, Spend, to_nano
from app.errors import BudgetExceededError, LimitsUnavailableError, RateLimitExceededError
from app.reliability.failover import close_quietly
from app.telemetry.record import Record
from app.tokens import estimate_messages_tokens

log = structlog.get_logger("pareto.auth")

_NO_SPEND = Spend()
_STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# A hold record outlives its request's deadline by this much before it stops counting: a
# request is cut at its deadline, then settles within moments (a response still being
# written to a slow client settles later; its hold is dropped, its cost still charged).
HOLD_GRACE_S = 60.0
# Pauses before the attempts of a background release or settle (the first goes at once).
RELEASE_RETRY_S = (0.0, 1.0, 5.0)
_LIMIT_WORDS = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
}


def limits_of(key: ApiKey) -> Limits:
    return Limits(
        name=key.name,
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        daily_nano=to_nano(key.daily_usd) if key.daily_usd is not None else None,
        monthly_nano=to_nano(key.monthly_usd) if key.monthly_usd is not None else None,
    )


def _store_down() -> LimitsUnavailableError:
    return LimitsUnavailableError(
        "the gateway cannot reach its rate-limit and budget store (Redis) right now, so it "
        "cannot check your key's limits; retry shortly",
        headers={"retry-after": "1"},
    )


def _usd(nano: int) -> str:
    """Dollars for a message: cents for real budgets, more digits for tiny test ones."""
    usd = nano / NANO
    if usd >= 1 or usd == 0:
        return f"${usd:,.2f}"
    return "$" + f"{usd:.6f}".rstrip("0").rstrip(".")


def _duration(seconds: float) -> str:
    s = max(1, math.ceil(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass(frozen=True, slots=True)
class _Settle:
    """What one settle sends, kept to send it again under the same id (``settle_id`` None:
    a release by id, which charges nothing and needs no id of its own)."""

    limits: Limits
    hold_id: str | None
    actual: int
    extra: int
    periods: Periods
    settle_id: str | None


class Ticket:
    """One request's claim on its key's limits: holds a budget estimate, settles once."""

    __slots__ = (
        "_guard",
        "_hold_id",
        "_holding",
        "_key",
        "_limits",
        "_periods",
        "_settled",
        "_tokens",
        "day",
        "month",
    )

    def __init__(
        self,
        guard: Guard | None,
        key: ApiKey | None,
        limits: Limits | None,
        tokens: int,
        day: Spend = _NO_SPEND,
        month: Spend = _NO_SPEND,
    ) -> None:
        self._guard = guard
        self._key = key
        self._limits = limits
        self._tokens = tokens
        self._hold_id: str | None = None
        # A hold record of this ticket may exist, and no release has been sent for it.
        self._holding = False
        self._periods: Periods | None = None
        self._settled = guard is None
        self.day = day
        self.month = month

    @property
    def needs_settling(self) -> bool:
        """False for keys without limits (or auth off): no wrapper on the response stream."""
        return not self._settled

    @property
    def budget_used(self) -> float | None:
        """Fraction (0..1+) of the tightest budget already spent or held; None = no budget."""
        limits = self._limits
        if limits is None:
            return None
        used = [
            spend.used / limit
            for spend, limit in ((self.day, limits.daily_nano), (self.month, limits.monthly_nano))
            if limit
        ]
        return max(used) if used else None

    async def hold(self, est_cost_usd: float, deadline_s: float) -> None:
        """Hold the estimated cost against the key's budgets; 402 when one is used up.

        ``deadline_s``: how long the request may still run; its hold stops counting
        ``HOLD_GRACE_S`` after that if it is never settled. Holds add up (a cascade holds
        each tier it runs) in one record; :meth:`settle` releases them all.
        """
        guard, key, limits = self._guard, self._key, self._limits
        if guard is None or key is None or limits is None or not key.has_budget:
            return
        now = guard.clock()
        # The record lives in these periods: every hold and the settle use the same ones.
        periods = self._periods = self._periods or Periods.at(now)
        amount = to_nano(est_cost_usd)
        hold_id = self._hold_id = self._hold_id or guard.new_hold_id()
        holding = self._holding
        self._holding = holding or amount > 0  # from here on it may be applied
        try:
            verdict = await guard.ledger.hold(
                limits, amount, periods, now, hold_id=hold_id, ttl_s=deadline_s + HOLD_GRACE_S
            )
        except _STORE_ERRORS as exc:
            # Applied or not, we cannot tell: release by id, without making the client wait.
            self._holding = False
            guard.release_later(limits, hold_id, periods)
            raise _store_down() from exc
        if verdict.ok:
            return
        self._holding = holding  # a refused hold records nothing
        period = verdict.period or "daily"
        limit = limits.daily_nano if period == "daily" else limits.monthly_nano
        assert limit is not None
        reset = periods.day_reset_s if period == "daily" else periods.month_reset_s
        spend = verdict.spend
        where = "today (UTC)" if period == "daily" else "this month (UTC)"
        if spend.spent < limit:
            # Settled spend is under the limit: requests in flight hold the rest.
            raise BudgetExceededError(
                f"the {period} budget of {_usd(limit)} for API key {key.name!r} is fully "
                f"reserved by requests in flight ({_usd(spend.spent)} spent {where}, "
                f"{_usd(spend.held)} held); retry in a few seconds",
                headers={"retry-after": "2"},
            )
        raise BudgetExceededError(
            f"the {period} budget of {_usd(limit)} for API key {key.name!r} is used up "
            f"({_usd(spend.spent)} spent {where}); it resets in {_duration(reset)} "
            f"(at 00:00 UTC{'' if period == 'daily' else ' on the 1st'}); ask the admin to "
            "raise it if you need more",
            headers={"retry-after": str(max(1, math.ceil(reset)))},
        )

    async def settle(self, record: Record) -> None:
        """Charge the actual cost and tokens; release the hold. Runs at most once."""
        if self._settled:
            return
        self._settled = True
        guard, key, limits = self._guard, self._key, self._limits
        assert guard is not None and key is not None and limits is not None
        actual = to_nano(record.cost_usd) if key.has_budget else 0
        extra = 0
        if limits.tokens_per_minute:
            extra = record.input_tokens + record.output_tokens - self._tokens
        hold_id = self._hold_id if self._holding else None
        if not (hold_id or actual or extra):
            return
        now = guard.clock()
        periods = self._periods or Periods.at(now)
        # The settle's own id makes it safe to send again (applied at most once).
        settle = _Settle(
            limits, hold_id, actual, extra, periods, self._hold_id or guard.new_hold_id()
        )
        # A client that goes away cancels the request's task (task.cancel(), which an anyio
        # shield does not stop): a settle cut short would leave the hold standing and the
        # cost uncharged, so it runs in a task of its own that the cancellation cannot reach.
        await guard.shielded(self._settle(record, settle, now))

    async def _settle(self, record: Record, settle: _Settle, now: float) -> None:
        guard = self._guard
        assert guard is not None
        try:
            await guard.ledger.settle(
                settle.limits,
                settle.hold_id,
                settle.actual,
                settle.extra,
                settle.periods,
                now,
                settle_id=settle.settle_id,
            )
        except _STORE_ERRORS as exc:
            # Applied or not, we cannot tell: send it again with the same id, which Redis
            # applies only if the first was not (no double charge, no lost charge).
            guard.settle_later(settle, record.request_id, type(exc).__name__)

    async def settle_after(
        self, stream: AsyncIterator[bytes], record: Record
    ) -> AsyncIterator[bytes]:
        """Pass a response stream through and settle when it ends, however it ends."""
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await close_quietly(stream)
            await self.settle(record)


class Guard:
    """The process's limit checker over one :class:`Ledger` (Redis-shared or in-memory)."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self._sleep = sleep
        # Hold ids: unique across replicas and workers (random prefix), cheap to make.
        self._hold_prefix = secrets.token_hex(6) + ":"
        self._hold_seq = itertools.count(1)
        self._releases: set[asyncio.Task[None]] = set()

    def new_hold_id(self) -> str:
        """An id for one request's hold record (a request's own id may be the client's)."""
        return f"{self._hold_prefix}{next(self._hold_seq):x}"

    def release_later(self, limits: Limits, hold_id: str, periods: Periods) -> None:
        """Release ``hold_id``'s record in the background (idempotent, so it is retried)."""
        self._background(self._release(_Settle(limits, hold_id, 0, 0, periods, None)))

    def settle_later(self, settle: _Settle, request_id: str, error: str) -> None:
        """Send again, in the background, a settle whose first attempt failed with
        ``error`` and may or may not have been applied (its id makes a retry safe)."""
        self._background(self._resettle(settle, request_id, error))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to the end even if the awaiting task is cancelled (it is then
        tracked with the background releases, which shutdown waits for)."""
        task = asyncio.create_task(work)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        await asyncio.shield(task)

    async def _retry(self, settle: _Settle) -> tuple[bool | None, int, str]:
        """Send ``settle`` on the retry schedule: (applied by this call (True), or by an
        earlier one (False), or unknown (None: every attempt failed); attempts; last error)."""
        error = ""
        attempts = 0
        for pause in RELEASE_RETRY_S:
            if pause:
                await self._sleep(pause)
            attempts += 1
            try:
                applied = await self.ledger.settle(
                    settle.limits,
                    settle.hold_id,
                    settle.actual,
                    settle.extra,
                    settle.periods,
                    self.clock(),
                    settle_id=settle.settle_id,
                )
                return applied, attempts, error
            except _STORE_ERRORS as exc:
                error = type(exc).__name__
        return None, attempts, error

    async def _release(self, release: _Settle) -> None:
        applied, _, error = await self._retry(release)
        if applied is None:
            log.error(
                "limits_release_failed",
                api_key_name=release.limits.name,
                error_type=error,
                detail="the hold stops counting when its record expires",
            )

    async def _resettle(self, settle: _Settle, request_id: str, first_error: str) -> None:
        fields = {
            "api_key_name": settle.limits.name,
            "request_id": request_id,
            "cost_usd": settle.actual / NANO,
            "first_error_type": first_error,
        }
        try:
            applied, attempts, error = await self._retry(settle)
        except asyncio.CancelledError:  # shutdown gave up waiting for Redis
            log.error("limits_settle_failed", charged="unknown", detail="shutdown", **fields)
            raise
        if applied is None:
            log.error(
                "limits_settle_failed",
                charged="unknown",  # the first attempt may have been applied
                retries=attempts,
                error_type=error,
                detail="the hold stops counting when its record expires",
                **fields,
            )
            return
        # Charged exactly once: by this retry, or by an earlier attempt whose reply was lost.
        log.warning(
            "limits_settle_retried",
            charged=True,
            charged_by="this_retry" if applied else "an_earlier_attempt",
            retries=attempts,
            **fields,
        )

    async def drain(self) -> None:
        """Wait until no background release or settle retry is in flight."""
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def aclose(self, wait_s: float) -> None:
        """At shutdown: give the background releases and settle retries ``wait_s`` to
        finish, cancel the rest (their holds stop counting when their records expire; a
        cancelled settle retry logs ``limits_settle_failed``)."""
        pending = set(self._releases)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=wait_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def peek(self, key: ApiKey | None) -> Ticket:
        """The key's budget state as :meth:`admit` would see it, for a dry run
        (``POST /v1/route``): one read of the ledger, no rate limit charged. The ticket's
        ``budget_used`` is admission's; it never holds or settles anything."""
        if key is None or not key.has_budget:
            return Ticket(None, key, None, 0)
        limits = limits_of(key)
        try:
            day, month = await self.ledger.spend(limits.name, Periods.at(self.clock()))
        except _STORE_ERRORS as exc:
            raise _store_down() from exc
        return Ticket(None, key, limits, 0, day, month)

    async def admit(self, key: ApiKey | None, body: dict[str, Any]) -> Ticket:
        """Check the key's rate limits for this request; 429 with Retry-After when over."""
        if key is None or not (key.has_rate_limit or key.has_budget):
            return Ticket(None, key, None, 0)
        limits = limits_of(key)
        tokens = estimate_messages_tokens(body.get("messages") or [])
        tpm = limits.tokens_per_minute
        if tpm is not None and tokens > tpm:
            raise RateLimitExceededError(
                f"this request has about {tokens} prompt tokens, more than API key "
                f"{key.name!r} may send in a minute ({tpm} tokens per minute); shorten it or ask "
                "the admin for a higher limit",
                code="request_too_large_for_limit",
            )
        try:
            verdict = await self.ledger.admit(limits, tokens, self.clock())
        except _STORE_ERRORS as exc:
            raise _store_down() from exc
        if not verdict.ok:
            name = verdict.limit or "requests_per_minute"
            value = getattr(limits, name)
            retry = max(1, math.ceil(verdict.retry_after_s))
            raise RateLimitExceededError(
                f"rate limit reached for API key {key.name!r}: {value} "
                f"{_LIMIT_WORDS.get(name, name)}; retry in {retry} s",
                headers={"retry-after": str(retry)},
            )
        return Ticket(self, key, limits, tokens, verdict.day, verdict.month)
