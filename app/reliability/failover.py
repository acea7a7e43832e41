"""The attempt walk: who serves a request when deployments fail.

:meth:`Failover.complete` and :meth:`Failover.stream` take a list of plan entries (the whole
plan, or one cascade tier) and try them in order:

* each deployment gets ``1 + max_retries`` attempts; a re-attempt waits a jittered exponential
  backoff (or the upstream's ``Retry-After``, if longer) and is queued *behind* the deployments
  not yet tried, so a healthy fallback answers first (Envoy's ``previous_hosts`` rule);
* a wait that does not fit the request's deadline is not taken: the walk moves on;
* hung or slow attempts (``timeout_first_token`` / ``timeout_total``) are not retried on the
  same deployment; a ``context_window`` error skips every later deployment whose window is not
  larger; a client-fault 400 is returned as is, never retried;
* an open circuit breaker skips its deployment (``circuit_open``) without an upstream call;
* for streams, failover is possible until the first content chunk: the head is buffered, then
  the rest is relayed through :meth:`Failover.relay`, which enforces the total timeout (one
  timer per stream, :mod:`app.reliability.deadline`) and reports the stream's verdict to the
  breaker when it ends.

Every error was classified at the provider edge; the walk only reads ``fallback_reason``,
``retryable``, ``retry_same`` and ``retry_after``.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio

from app.errors import (
    CircuitOpenError,
    UpstreamContextWindowError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.providers import ProviderRegistry
from app.providers.base import Completion, StreamChunk, UpstreamCall
from app.reliability.clock import Clock, MonotonicClock
from app.reliability.deadline import StreamDeadline
from app.reliability.limits import (
    AttemptLimits,
    Defaults,
    RequestLimits,
    attempt_limits,
)
from app.reliability.outcome import Walk, all_failed
from app.reliability.shared import Breakers
from app.routing.plan import PlanEntry
from app.telemetry.record import Record
from app.telemetry.timing import upstream_call

T = TypeVar("T")
_NOT_RETRIED_SAME = frozenset({"timeout_first_token", "timeout_total"})
# Failures that say nothing bad about the deployment's health.
_HEALTHY = frozenset({"context_window"})


class AttemptMonitor(Protocol):
    """Told about every upstream attempt (the router's live estimates implement it)."""

    def attempt_started(self, deployment_id: str) -> None: ...

    def attempt_finished(
        self,
        deployment_id: str,
        *,
        ok: bool,
        total_s: float | None = None,
        ttft_s: float | None = None,
        output_tokens: int = 0,
    ) -> None: ...


@dataclass(slots=True)
class OpenedStream:
    """A stream that produced its first token: buffered head, then the guarded rest."""

    entry: PlanEntry
    head: list[StreamChunk]
    rest: AsyncIterator[StreamChunk]


async def close_quietly(source: Any) -> None:
    """Close an upstream iterator even while the request is being cancelled.

    A client disconnect cancels the response task; without the shield the close itself would
    be cancelled and the upstream connection left open. An async generator that has already
    finished (every stream that ended normally) has nothing to close: it returns at once,
    without the shield (anyio's cancel scope costs ~12 µs, and a stream passes here three
    times).
    """
    if getattr(source, "ag_frame", True) is None:  # a finished async generator
        return
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


class Failover:
    """Walks plan entries for one request at a time; holds no per-request state."""

    def __init__(
        self,
        providers: ProviderRegistry,
        breakers: Breakers,
        defaults: Defaults,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.providers = providers
        self.breakers = breakers
        self.defaults = defaults
        self._clock = clock or MonotonicClock()
        self._sleep = sleep
        self._jitter = jitter
        # Set by the gateway: the router learns TTFT / decode speed / in-flight from attempts.
        self.monitor: AttemptMonitor | None = None

    def begin(self, request_id: str, record: Record, limits: RequestLimits) -> Walk:
        """Start a request's walk: its deadline runs from now."""
        return Walk(request_id, record, limits, self._clock.now() + limits.request_timeout_s)

    def backoff_s(self, attempt: int, limits: RequestLimits) -> float:
        """Full-jitter exponential backoff before re-attempt number ``attempt`` (1, 2, …)."""
        cap = min(limits.retry_backoff_max_s, limits.retry_backoff_s * 2 ** (attempt - 1))
        return float(cap * self._jitter())

    # -- public walks -----------------------------------------------------------------------
    async def complete(
        self,
        entries: Sequence[PlanEntry],
        body: dict[str, Any],
        walk: Walk,
        *,
        body_for: Callable[[PlanEntry], dict[str, Any]] | None = None,
    ) -> tuple[PlanEntry, Completion]:
        """A whole answer from the first deployment that can give one.

        ``body_for`` (cascades) picks the body per deployment, e.g. asking for logprobs only
        where the deployment supports them; it overrides ``body``.
        """
        return await self._walk(
            entries, body, walk, self._complete_once, stream=False, body_for=body_for
        )

    async def stream(
        self, entries: Sequence[PlanEntry], body: dict[str, Any], walk: Walk
    ) -> OpenedStream:
        """A stream that has produced its first token (failover is invisible until then)."""
        return await self._walk(entries, body, walk, self._open_once, stream=True)

    # -- the walk ---------------------------------------------------------------------------
    async def _walk(
        self,
        entries: Sequence[PlanEntry],
        body: dict[str, Any],
        walk: Walk,
        attempt: Callable[[PlanEntry, UpstreamCall, AttemptLimits, float], Awaitable[T]],
        *,
        stream: bool,
        body_for: Callable[[PlanEntry], dict[str, Any]] | None = None,
    ) -> T:
        clock = self._clock
        queue = deque(entries)
        tries: dict[str, int] = {}
        last_failure: dict[str, tuple[float, UpstreamError]] = {}
        window_floor = 0  # after a context_window error: only larger windows are worth trying
        while queue:
            entry = queue.popleft()
            dep = entry.deployment
            if dep.context_window <= window_floor:
                continue
            n = tries.get(dep.id, 0)
            if n:
                failed_at, exc = last_failure[dep.id]
                delay = self.backoff_s(n, walk.limits)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                wait = failed_at + delay - clock.now()
                if wait >= walk.deadline - clock.now():
                    continue  # the wait does not fit the deadline: move on
                if wait > 0:  # a backoff forced by the upstream: not the gateway's overhead
                    await upstream_call(walk.record, self._sleep(wait))
            remaining = walk.deadline - clock.now()
            if remaining <= 0:
                break
            if not await self.breakers.acquire(dep.id):
                walk.note(
                    entry,
                    CircuitOpenError(
                        f"deployment {dep.id} is skipped: its circuit breaker is open",
                        deployment=dep.id,
                        retry_after=self.breakers.retry_in(dep.id),
                    ),
                    called=False,
                )
                continue
            tries[dep.id] = n + 1
            limits = attempt_limits(self.defaults, walk.limits, dep)
            total_s = min(limits.total_s, remaining)
            call = UpstreamCall(
                deployment=dep,
                body=body if body_for is None else body_for(entry),
                request_id=walk.request_id,
                connect_timeout_s=limits.connect_s,
                # A non-stream's first byte comes when the whole answer is ready: its budget
                # is the first-token timeout plus the deployment's expected decode time.
                first_token_timeout_s=limits.first_token_s
                if stream
                else limits.first_token_s + max(0.0, entry.est_latency_s - dep.ttft_s),
                total_timeout_s=total_s,
                prompt_cache=walk.prompt_cache,
            )
            if self.monitor is not None:
                self.monitor.attempt_started(dep.id)
            try:
                result = await upstream_call(walk.record, attempt(entry, call, limits, total_s))
            except UpstreamError as exc:
                if self.monitor is not None:
                    self.monitor.attempt_finished(dep.id, ok=False)
                walk.note(entry, exc)
                await self._judge(dep.id, exc)
                if not exc.retryable:
                    exc.headers.update(walk.headers())  # the client's own fault, as is
                    raise
                if isinstance(exc, UpstreamContextWindowError):
                    window_floor = max(window_floor, dep.context_window)
                elif (
                    exc.retry_same
                    and exc.fallback_reason not in _NOT_RETRIED_SAME
                    and tries[dep.id] <= walk.limits.max_retries
                ):
                    last_failure[dep.id] = (clock.now(), exc)
                    queue.append(entry)
                continue
            except BaseException:
                if self.monitor is not None:
                    self.monitor.attempt_finished(dep.id, ok=False)
                with anyio.CancelScope(shield=True):
                    await self.breakers.release(dep.id)
                raise
            walk.note(entry, None)
            if not stream:
                await self.breakers.success(dep.id)
            return result
        raise all_failed(walk)

    async def _judge(self, deployment: str, exc: UpstreamError) -> None:
        """Tell the breaker what this failure says about the deployment's health."""
        if exc.fallback_reason == "auth_failed":
            await self.breakers.trip(deployment, "auth_failed")
        elif exc.fallback_reason in _HEALTHY or not exc.retryable:
            await self.breakers.success(deployment)
        else:
            await self.breakers.failure(deployment)

    # -- one attempt ------------------------------------------------------------------------
    async def _complete_once(
        self, entry: PlanEntry, call: UpstreamCall, limits: AttemptLimits, total_s: float
    ) -> tuple[PlanEntry, Completion]:
        provider = self.providers.for_deployment(entry.deployment)
        started = self._clock.now()
        try:
            async with asyncio.timeout(total_s):
                completion = await provider.complete(call)
        except TimeoutError as exc:
            raise _timeout(entry, "timeout_total", total_s) from exc
        if self.monitor is not None:
            self.monitor.attempt_finished(
                entry.deployment.id,
                ok=True,
                total_s=self._clock.now() - started,
                output_tokens=completion.usage.completion_tokens,
            )
        return entry, completion

    async def _open_once(
        self, entry: PlanEntry, call: UpstreamCall, limits: AttemptLimits, total_s: float
    ) -> OpenedStream:
        provider = self.providers.for_deployment(entry.deployment)
        started = self._clock.now()
        source = provider.stream(call)
        head: list[StreamChunk] = []
        budget, reason = (
            (limits.first_token_s, "timeout_first_token")
            if limits.first_token_s < total_s
            else (total_s, "timeout_total")
        )
        try:
            async with asyncio.timeout(budget):
                async for chunk in source:
                    head.append(chunk)
                    if chunk.content:
                        break
        except TimeoutError as exc:
            await close_quietly(source)
            raise _timeout(entry, reason, budget) from exc
        except BaseException:
            await close_quietly(source)
            raise
        usage = next((c.usage for c in head if c.usage is not None), None)
        rest = self.relay(
            entry,
            source,
            started + total_s,
            started=started,
            ttft_s=self._clock.now() - started,
            head_usage=usage.completion_tokens if usage is not None else 0,
        )
        return OpenedStream(entry=entry, head=head, rest=rest)

    async def relay(
        self,
        entry: PlanEntry,
        source: AsyncIterator[StreamChunk],
        deadline: float,
        *,
        started: float | None = None,
        ttft_s: float | None = None,
        head_usage: int = 0,
    ) -> AsyncIterator[StreamChunk]:
        """The rest of a started stream, cut at ``deadline``; reports the breaker verdict
        (and, when ``started`` is given, the attempt's timings to the monitor)."""
        dep = entry.deployment.id
        verdict: UpstreamError | bool | None = None  # True ok, error failed, None no verdict
        output_tokens = head_usage
        # One timer for the whole stream, not one per chunk (app/reliability/deadline.py).
        cut = StreamDeadline(deadline - self._clock.now())
        pull = source.__anext__
        try:
            while True:
                try:
                    chunk = await cut.wait(pull())
                except StopAsyncIteration:
                    verdict = True
                    return
                except TimeoutError as exc:
                    verdict = _timeout(entry, "timeout_total", None)
                    raise verdict from exc
                except UpstreamError as exc:
                    verdict = exc
                    raise
                if chunk.usage is not None:
                    output_tokens = chunk.usage.completion_tokens
                yield chunk
        finally:
            cut.close()
            if self.monitor is not None and started is not None:
                self.monitor.attempt_finished(
                    dep,
                    ok=verdict is True and output_tokens > 0,
                    total_s=self._clock.now() - started,
                    ttft_s=ttft_s,
                    output_tokens=output_tokens,
                )
            await close_quietly(source)
            # A healthy stream's success is counted locally (no I/O, no shield needed).
            if not (verdict is True and self.breakers.success_nowait(dep)):
                with anyio.CancelScope(shield=True):
                    if verdict is True:
                        await self.breakers.success(dep)
                    elif isinstance(verdict, UpstreamError):
                        await self._judge(dep, verdict)
                    else:
                        await self.breakers.release(dep)


def _timeout(entry: PlanEntry, reason: str, seconds: float | None) -> UpstreamTimeoutError:
    dep = entry.deployment.id
    within = f" within {seconds:.3g}s" if seconds is not None else ""
    what = "first token" if reason == "timeout_first_token" else "answer"
    return UpstreamTimeoutError(
        f"deployment {dep} did not send its {what}{within} ({reason})",
        reason=reason,
        deployment=dep,
    )
