"""``Gateway.handle_chat``: the one place that wires routing, providers and telemetry together.

It holds no policy of its own: routing decides the plan, the reliability walk decides who
serves it, and the result is rendered by the API layer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.auth.access import allowed_models
from app.auth.config import ApiKey
from app.auth.guard import Ticket
from app.auth.pressure import budget_factor
from app.cascade.driver import (
    Accepted,
    BodyFor,
    CascadeDriver,
    cascade_headers,
    cascade_name,
    note_failed,
    note_served,
)
from app.cascade.replay import completion_events
from app.catalog.model import Catalog, Deployment, Policy
from app.errors import GatewayError, UpstreamError
from app.feedback import Feedback
from app.providers import ProviderRegistry
from app.providers.base import Completion, StreamChunk, Usage
from app.reliability import Failover, Walk, build_breakers, close_quietly, request_limits
from app.reliability.limits import Defaults
from app.routing.plan import PlanEntry, RoutePlan
from app.routing.router import Router
from app.sessions import SessionLookup, Sessions, session_route
from app.settings import Settings
from app.telemetry.attribution import request_attribution
from app.telemetry.metrics import Metrics
from app.telemetry.record import Record
from app.tokens import content_text, estimate_messages_tokens, estimate_tokens

GATEWAY_KEYS = ("pareto",)
# The last event of a relayed stream that completed (this very object, so the API layer can
# recognise it and send it in one write with the response's end; see app/api/chat.py).
SSE_DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class ChatResult:
    """What the API layer renders: a JSON body or an SSE byte stream, plus headers."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200


@dataclass(slots=True)
class RequestContext:
    """Per-request state passed explicitly through the request path."""

    request_id: str
    headers: Mapping[str, str]
    started: float
    record: Record
    extras: dict[str, Any] = field(default_factory=dict)
    session: SessionLookup | None = None
    api_key: ApiKey | None = None  # the caller's gateway key; None = auth is off
    # A session lookup already on its way (Sessions.prefetch), taken by handle_chat.
    session_pending: asyncio.Task[SessionLookup] | None = None
    walk: Walk = field(init=False)
    ticket: Ticket | None = None  # the key's budget / rate-limit claim (app.auth.guard)


def drop_prefetch(ctx: RequestContext) -> None:
    """Cancel a prefetched session lookup the request will not use (it failed early)."""
    pending, ctx.session_pending = ctx.session_pending, None
    if pending is not None and not pending.done():
        pending.cancel()
    elif pending is not None and not pending.cancelled():
        pending.exception()  # retrieved: no "exception was never retrieved" warning


def cost_usd(deployment: Deployment, usage: Usage) -> float:
    """Actual cost from usage and the catalog's prices (cache reads and writes at theirs)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_creation_tokens, usage.prompt_tokens - cached)
    return deployment.static_cost_usd(
        usage.prompt_tokens,
        usage.completion_tokens,
        cached,
        written,
        min(usage.cache_creation_1h_tokens, written),
    )


def counted_usage(body: dict[str, Any], text: str) -> Usage:
    """Usage the gateway counts itself when the upstream reports none."""
    return Usage(
        prompt_tokens=estimate_messages_tokens(body.get("messages") or []),
        completion_tokens=estimate_tokens(text),
        reported=False,
    )


def _counted_stream_usage(body: dict[str, Any], out_chars: int, prompt: Usage | None) -> Usage:
    """Usage of a stream that ended without its final usage: the output counted by the
    gateway from what was relayed; the input as the upstream reported it at the start
    (``prompt``: Anthropic's cache reads and writes, priced as such), else counted too."""
    completion = max(1, out_chars // 40)
    if prompt is None:
        return Usage(
            prompt_tokens=estimate_messages_tokens(body.get("messages") or []),
            completion_tokens=completion,
            reported=False,
        )
    return Usage(
        prompt_tokens=prompt.prompt_tokens,
        completion_tokens=max(completion, prompt.completion_tokens),
        cached_tokens=prompt.cached_tokens,
        cache_creation_tokens=prompt.cache_creation_tokens,
        cache_creation_1h_tokens=prompt.cache_creation_1h_tokens,
        reported=False,
    )


async def _aiter(events: Iterable[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


class Gateway:
    """Holds the live catalog and the process's clients; serves one request at a time each."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        providers: ProviderRegistry,
        emit: Callable[[Record], None] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.providers = providers
        self._emit = emit or (lambda record: None)
        # The process's one Redis pool (None = in-memory stores), set by the app's lifespan.
        self.redis: Any = None
        # Session stickiness (off until the lifespan builds the store).
        self.sessions = Sessions(None)
        # Reliability: the attempt walk and the breakers (shared once lifespan hands over Redis).
        self.failover = Failover(
            providers, build_breakers(settings, None), Defaults.from_settings(settings)
        )
        self.cascade = CascadeDriver(self)
        # Routing state that outlives a request: precomputed catalog arrays, live estimates
        # (fed by every attempt of the walk), and the breakers' view of who is unavailable.
        self.router = Router(catalog)
        self.failover.monitor = self.router
        self.router.health = lambda: self.failover.breakers.unavailable()
        # Feedback on served requests (off until the lifespan builds it from settings).
        self.feedback = Feedback(None, None)
        # The app's metrics, for state pushed outside requests (breakers, Redis health).
        self.metrics: Metrics | None = None

    def swap_catalog(self, catalog: Catalog) -> None:
        """Atomic replacement: requests already running keep the catalog they started with."""
        self.router.bind(catalog)
        self.catalog = catalog

    # -- request path -----------------------------------------------------------------------
    def plan(
        self, catalog: Catalog, body: dict[str, Any], ctx: RequestContext, *, explain: bool = False
    ) -> RoutePlan:
        """The request's routing decision from its inputs: the key's models, the session's
        sticky deployment (``ctx.session``) and the key's budget pressure (``ctx.ticket``)."""
        allowed = self._allowed(catalog, body, ctx)
        sticky = ctx.session.sticky if ctx.session is not None else None
        used = ctx.ticket.budget_used if ctx.ticket is not None else None
        return self.router.route(
            catalog,
            body,
            ctx.headers,
            allowed_models=allowed,
            sticky=sticky,
            budget_factor=budget_factor(catalog, body, ctx.headers, used),
            explain=explain,
        )

    async def explain_route(self, body: dict[str, Any], ctx: RequestContext) -> RoutePlan:
        """``POST /v1/route``: the plan chat would make now, with one explained row per
        deployment, no model call. The same inputs as :meth:`plan` for a chat request: the
        session, looked up read-only (its TTL is not renewed), and ``ctx.ticket``, the key's
        budget as read by ``Guard.peek`` (nothing held, no rate limit charged)."""
        ctx.session = await self.sessions.lookup(body, ctx.headers)
        return self.plan(self.catalog, body, ctx, explain=True)

    @staticmethod
    def _allowed(
        catalog: Catalog, body: dict[str, Any], ctx: RequestContext
    ) -> frozenset[str] | None:
        """The models the caller's key may route to; a policy override must be allowed too."""
        if ctx.api_key is None:
            return None
        override = ctx.headers.get("x-pareto-policy")
        extra = body.get("pareto")
        if override is None and isinstance(extra, dict) and isinstance(extra.get("policy"), str):
            override = extra["policy"]
        if override is not None and override in catalog.policies:
            allowed_models(ctx.api_key, catalog, override)
        return allowed_models(ctx.api_key, catalog, str(body.get("model")))

    def _upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        if not any(k in body for k in GATEWAY_KEYS):
            return body
        return {k: v for k, v in body.items() if k not in GATEWAY_KEYS}

    def _headers(self, ctx: RequestContext, plan: RoutePlan, entry: PlanEntry) -> dict[str, str]:
        rec = ctx.record
        headers = {
            "x-request-id": ctx.request_id,
            "x-pareto-model": entry.deployment.model.name,
            "x-pareto-deployment": entry.deployment.id,
            "x-pareto-reason": plan.reason if entry is plan.entries[0] else entry.reason,
            "x-pareto-est-cost-usd": f"{entry.est_cost_usd:.8f}",
        }
        if plan.policy:
            headers["x-pareto-policy"] = plan.policy
        if rec.session_sticky is not None:
            headers["x-pareto-session"] = (
                "sticky"
                if rec.session_sticky
                else f"switched:{rec.session_switch_reason}"
                if rec.session_switch_reason
                else "new"
            )
        headers.update(ctx.walk.headers())
        if rec.tiers:
            headers.update(cascade_headers(rec))
        return headers

    async def _remember_session(
        self, ctx: RequestContext, plan: RoutePlan, entry: PlanEntry, body: dict[str, Any]
    ) -> None:
        """Record whether the session stayed put, and store who served it."""
        session = ctx.session
        if session is None:
            return
        served = entry.deployment.id
        route = session_route(str(body.get("model")), plan.policy)
        rec = ctx.record
        rec.session_sticky, rec.session_switch_reason = session.outcome(served, route, plan.sticky)
        await self.sessions.remember(session, served, route)

    async def _remember_for_feedback(
        self, ctx: RequestContext, plan: RoutePlan, entry: PlanEntry, body: dict[str, Any]
    ) -> None:
        if self.feedback.enabled:
            dep = entry.deployment
            await self.feedback.remember(
                ctx.request_id,
                body,
                model=dep.model.name,
                deployment=dep.id,
                policy=plan.policy,
                features=plan.features,
                user_id=ctx.record.user_id,
                tags=ctx.record.tags,
            )

    def _finish_record(
        self, ctx: RequestContext, entry: PlanEntry, usage: Usage, ttft_s: float | None
    ) -> None:
        rec = ctx.record
        dep = entry.deployment
        rec.provider = dep.provider
        rec.model = dep.model.name
        rec.deployment = dep.id
        rec.input_tokens = usage.prompt_tokens
        rec.cached_input_tokens = usage.cached_tokens
        rec.cache_write_input_tokens = usage.cache_creation_tokens
        rec.cache_hit = usage.cached_tokens > 0
        rec.output_tokens = usage.completion_tokens
        rec.usage_counted_by_gateway = not usage.reported
        answer_cost = cost_usd(dep, usage)
        rec.cost_usd += answer_cost
        note_served(rec, dep.id, dep.model.name, answer_cost)
        rec.est_cost_usd = entry.est_cost_usd
        elapsed = time.perf_counter() - ctx.started
        rec.finish_timing(elapsed)
        if ttft_s is not None:
            rec.ttft_ms = ttft_s * 1000
            decode = elapsed - ttft_s
            if usage.completion_tokens > 1 and decode > 0:
                rec.decode_tps = (usage.completion_tokens - 1) / decode

    def record_failure(self, ctx: RequestContext, status: int, error: str) -> None:
        """The request ended with an error response: emit its record (once) with it."""
        rec = ctx.record
        rec.status = status
        rec.user_visible_error = error
        rec.finish_timing(time.perf_counter() - ctx.started)
        self._emit(rec)

    async def handle_chat(self, body: dict[str, Any], ctx: RequestContext) -> ChatResult:
        attribution = request_attribution(body)  # a 400 before anything is routed or held
        ctx.record.user_id, ctx.record.tags = attribution.user_id, attribution.tags
        catalog = self.catalog
        cascade = self._cascade_policy(catalog, body, ctx)
        if cascade is not None:
            drop_prefetch(ctx)
            # Cheap tiers first (app/cascade); one reliability walk spans every tier.
            ctx.walk = self.failover.begin(
                ctx.request_id, ctx.record, request_limits(self.failover.defaults, cascade)
            )
            try:
                return await self._cascade(catalog, cascade, body, ctx)
            except GatewayError:
                note_failed(ctx.record)  # the route emits the record (record_failure)
                raise
        pending, ctx.session_pending = ctx.session_pending, None
        if pending is not None:
            ctx.session = await pending
        else:
            ctx.session = await self.sessions.lookup(body, ctx.headers)
        routing_started = time.perf_counter()
        plan = self.plan(catalog, body, ctx)
        rec = ctx.record
        rec.routing_ms = (time.perf_counter() - routing_started) * 1000  # not the hold's I/O
        policy = catalog.policies.get(plan.policy) if plan.policy else None
        # The walk (and its deadline) first: the hold's record expires after the deadline.
        ctx.walk = self.failover.begin(
            ctx.request_id, rec, request_limits(self.failover.defaults, policy)
        )
        # The plan's cost estimate assumed the same setting (ResolvedPolicy.prompt_cache).
        ctx.walk.prompt_cache = plan.resolved.prompt_cache if plan.resolved is not None else None
        await self._hold(ctx, plan)
        rec.router_policy = plan.policy
        rec.quality_floor = plan.quality_floor
        upstream_body = self._upstream_body(body)
        # An error raised from here is recorded once, by the route (Gateway.record_failure).
        if body.get("stream"):
            return await self._stream(plan, body, upstream_body, ctx)
        return await self._complete(plan, body, upstream_body, ctx)

    def prefetch_session(self, body: dict[str, Any], ctx: RequestContext) -> None:
        """Start the session lookup before the rate-limit check, so the two Redis commands
        share one write and one round trip (cascade policies do not use sessions)."""
        if self._cascade_policy(self.catalog, body, ctx) is None:
            ctx.session_pending = self.sessions.prefetch(body, ctx.headers)

    async def _hold(self, ctx: RequestContext, plan: RoutePlan) -> None:
        """Hold the plan's estimated cost against the key's budget (402 when used up), for
        as long as the request's walk may run."""
        if ctx.ticket is not None:
            await ctx.ticket.hold(plan.primary.est_cost_usd, ctx.walk.limits.request_timeout_s)

    async def _cascade(
        self, catalog: Catalog, policy: Policy, body: dict[str, Any], ctx: RequestContext
    ) -> ChatResult:
        """A cascade policy: cheap tiers judged first (app/cascade), then the last tier."""
        assert policy.cascade is not None
        allowed_models(ctx.api_key, catalog, policy.name)  # 403 when the key may not use it
        rec = ctx.record
        rec.router_policy = policy.name
        upstream_body = self._upstream_body(body)
        stream = bool(body.get("stream"))
        outcome = await self.cascade.run(
            catalog,
            policy.name,
            policy.cascade,
            body,
            upstream_body,
            ctx,
            last_tier_only=stream and policy.cascade.streaming == "last_tier_only",
        )
        if isinstance(outcome, Accepted):
            await self._remember_for_feedback(ctx, outcome.plan, outcome.entry, body)
            return self._render_completion(
                outcome.plan, outcome.entry, body, outcome.completion, ctx, stream=stream
            )
        await self._hold(ctx, outcome.plan)
        if stream:
            return await self._stream(outcome.plan, body, upstream_body, ctx)
        return await self._complete(outcome.plan, body, upstream_body, ctx)

    @staticmethod
    def _cascade_policy(
        catalog: Catalog, body: dict[str, Any], ctx: RequestContext
    ) -> Policy | None:
        """The cascade policy the request names (by ``model`` or a policy override), if any."""
        if not catalog.cascades:
            return None
        name = cascade_name(body, ctx.headers)
        return catalog.policies[name] if name in catalog.cascades else None

    def explain_cascade(self, body: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        """``POST /v1/route`` for a cascade policy (None when the request names none)."""
        catalog = self.catalog
        policy = self._cascade_policy(catalog, body, ctx)
        if policy is None or policy.cascade is None:
            return None
        allowed_models(ctx.api_key, catalog, policy.name)
        return self.cascade.explain(catalog, policy.name, policy.cascade, body, ctx)

    # -- the cascade driver's TierWalker ----------------------------------------------------
    def plan_tier(
        self,
        catalog: Catalog,
        body: dict[str, Any],
        ctx: RequestContext,
        *,
        client_overrides: bool = True,
        explain: bool = False,
    ) -> RoutePlan:
        """A cascade tier's (or judge's) routing plan: never the client's policy override."""
        headers = {
            k: v
            for k, v in ctx.headers.items()
            if k != "x-pareto-policy" and (client_overrides or not k.startswith("x-pareto-"))
        }
        allowed = allowed_models(ctx.api_key, catalog, str(body.get("model")))
        # A cascade's walk leaves prompt caching to each deployment: so does its estimate.
        return self.router.route(
            catalog,
            body,
            headers,
            allowed_models=allowed,
            explain=explain,
            policy_prompt_cache=False,
        )

    async def walk_complete(
        self, plan: RoutePlan, body_for: BodyFor, ctx: RequestContext
    ) -> tuple[PlanEntry, Completion]:
        """The reliability walk over a tier's plan (retries, timeouts, breakers, failover)."""
        await self._hold(ctx, plan)
        return await self.failover.complete(plan.entries, {}, ctx.walk, body_for=body_for)

    def completion_cost(
        self, entry: PlanEntry, body: dict[str, Any], completion: Completion
    ) -> float:
        """What a completion cost, from its usage (counted by the gateway if unreported)."""
        usage = completion.usage
        if not usage.reported:
            text = "".join(
                content_text((c.get("message") or {}).get("content"))
                for c in completion.body.get("choices") or []
            )
            usage = counted_usage(body, text)
        return cost_usd(entry.deployment, usage)

    async def _complete(
        self,
        plan: RoutePlan,
        body: dict[str, Any],
        upstream_body: dict[str, Any],
        ctx: RequestContext,
    ) -> ChatResult:
        entry, completion = await self.failover.complete(plan.entries, upstream_body, ctx.walk)
        await self._remember_session(ctx, plan, entry, body)
        await self._remember_for_feedback(ctx, plan, entry, body)
        return self._render_completion(plan, entry, body, completion, ctx)

    def _render_completion(
        self,
        plan: RoutePlan,
        entry: PlanEntry,
        body: dict[str, Any],
        completion: Completion,
        ctx: RequestContext,
        stream: bool = False,
    ) -> ChatResult:
        usage = completion.usage
        out = completion.body
        if not usage.reported:
            text = "".join(
                content_text((c.get("message") or {}).get("content")) for c in out["choices"]
            )
            usage = counted_usage(body, text)
            out["usage"] = usage.to_openai()
        self._finish_record(ctx, entry, usage, completion.ttft_s)
        self.router.output_observed(plan, usage.completion_tokens)
        headers = self._headers(ctx, plan, entry)
        headers["x-pareto-cost-usd"] = f"{ctx.record.cost_usd:.8f}"
        self._emit(ctx.record)
        if stream:  # a buffered cascade tier's answer, replayed to a streaming client
            options = body.get("stream_options")
            usage_wanted = isinstance(options, dict) and bool(options.get("include_usage"))
            return ChatResult(
                headers=headers, stream=_aiter(completion_events(out, include_usage=usage_wanted))
            )
        return ChatResult(headers=headers, body=orjson.dumps(out))

    async def _stream(
        self,
        plan: RoutePlan,
        body: dict[str, Any],
        upstream_body: dict[str, Any],
        ctx: RequestContext,
    ) -> ChatResult:
        opened = await self.failover.stream(plan.entries, upstream_body, ctx.walk)
        await self._remember_session(ctx, plan, opened.entry, body)
        await self._remember_for_feedback(ctx, plan, opened.entry, body)
        ttft = time.perf_counter() - ctx.started
        headers = self._headers(ctx, plan, opened.entry)
        return ChatResult(
            headers=headers,
            stream=self._relay(plan, opened.entry, body, opened.rest, opened.head, ttft, ctx),
        )

    async def _relay(
        self,
        plan: RoutePlan,
        entry: PlanEntry,
        body: dict[str, Any],
        source: AsyncIterator[StreamChunk],
        head: list[StreamChunk],
        ttft_s: float,
        ctx: RequestContext,
    ) -> AsyncIterator[bytes]:
        """Pass chunks through; end with [DONE], or with an SSE error event on failure.

        It also splits the stream's time (:mod:`app.telemetry.timing`): waits on ``source``
        go to ``record.upstream_ms``; the time between handing bytes out and being asked for
        more (the server writing them, the client reading) to ``record.client_wait_ms``.
        """
        options = body.get("stream_options")
        want_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        usage: Usage | None = None
        prompt_usage: Usage | None = None  # the input side, when reported at the start
        out_chars = 0
        rec = ctx.record
        clock = time.perf_counter
        finished = False
        try:
            parts: list[bytes] = []
            for chunk in head:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.prompt_usage is not None:
                    prompt_usage = chunk.prompt_usage
                out_chars += chunk.content_bytes
                if not (chunk.usage_only and not want_usage):
                    parts.append(chunk.data)
            if parts:
                handed = clock()
                yield b"".join(parts)
                rec.client_wait_ms += (clock() - handed) * 1000
            pull = source.__anext__
            try:
                while True:
                    waited = clock()
                    try:
                        chunk = await pull()
                    except StopAsyncIteration:
                        break
                    finally:
                        handed = clock()
                        rec.upstream_ms += (handed - waited) * 1000
                    if chunk.usage is not None:
                        usage = chunk.usage
                    out_chars += chunk.content_bytes
                    if chunk.usage_only and not want_usage:
                        continue
                    yield chunk.data
                    rec.client_wait_ms += (clock() - handed) * 1000
            except UpstreamError as exc:
                rec.status = exc.status
                rec.user_visible_error = exc.fallback_reason
                rec.fallback_reason = rec.fallback_reason or exc.fallback_reason
                err = GatewayError(
                    f"the upstream stream failed after it had started ({exc.fallback_reason}); "
                    "the answer above is incomplete, retry the request",
                    code="stream_interrupted",
                )
                err.type = "upstream_error"
                yield b"data: " + err.to_json() + b"\n\n"
                finished = True
                return
            if usage is None:
                usage = _counted_stream_usage(body, out_chars, prompt_usage)
                if want_usage:
                    yield (
                        b"data: "
                        + orjson.dumps(
                            {
                                "id": f"chatcmpl-{ctx.request_id}",
                                "object": "chat.completion.chunk",
                                "created": int(time.time()),
                                "model": entry.deployment.upstream_model,
                                "choices": [],
                                "usage": usage.to_openai(),
                            }
                        )
                        + b"\n\n"
                    )
            handed = clock()
            yield SSE_DONE
            rec.client_wait_ms += (clock() - handed) * 1000
            finished = True
        finally:
            # Record first: on a disconnect this runs in a cancelled task, and the await
            # below may be cancelled again before it returns.
            if not finished:
                rec.client_disconnected = True
                rec.status = 499
            if usage is None:  # cut or failed: what was relayed so far, counted by the gateway
                usage = _counted_stream_usage(body, out_chars, prompt_usage)
            self._finish_record(ctx, entry, usage, ttft_s)
            if finished and rec.status == 200:
                self.router.output_observed(plan, usage.completion_tokens)
            self._emit(rec)
            await close_quietly(source)
