"""The cascade driver: try the cheap tiers in order, judge each answer, escalate when weak.

Every tier but the last is run whole (buffered, never streamed) through the reliability walk,
so a deployment that fails inside a tier is failover (``fallback_reason``, that tier's own
fallbacks), while an answer that fails the acceptance checks, or a tier that takes longer than
its ``timeout_s``, is an escalation (``escalation_reason``). The result is either

- :class:`Accepted` — a cheap tier's checked completion, rendered by the gateway as JSON or as
  a replayed SSE burst; or
- :class:`Escalated` — the last tier's routing plan, which the gateway serves on its ordinary
  path (streamed live to streaming clients, never checked: nothing is left to escalate to).

Telemetry: ``record.tiers`` gets one item per tier tried (target, deployment, cost, outcome,
reason); ``record.cost_usd`` is the sum of the items' ``cost_usd`` (judge calls included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from app.cascade.answer import Answer, strip_logprobs_body
from app.cascade.checks import (
    AcceptanceCheck,
    RequestShape,
    Verdict,
    build_checks,
    confidence,
    run_checks,
)
from app.cascade.judge import judge_accepts, judge_body
from app.catalog.cascade import CascadePolicy, CascadeTier, JudgeConfig
from app.catalog.model import Catalog
from app.errors import (
    AllDeploymentsFailedError,
    GatewayError,
    NoFeasibleDeploymentError,
    PermissionDeniedError,
    UpstreamContextWindowError,
)
from app.providers.base import Completion
from app.routing.plan import PlanEntry, RoutePlan
from app.telemetry.record import Record

BodyFor = Callable[[PlanEntry], dict[str, Any]]
_CHECK_CACHE_SIZE = 64


class TierWalker(Protocol):
    """What the driver needs from the gateway: routing, the reliability walk, pricing."""

    def plan_tier(
        self,
        catalog: Catalog,
        body: dict[str, Any],
        ctx: Any,
        *,
        client_overrides: bool = True,
        explain: bool = False,
    ) -> RoutePlan:
        """The routing plan of a tier (``body["model"]`` names its model or policy).

        Never with the client's policy override (the cascade *is* the policy); with its
        numeric overrides (floor, ceilings) unless ``client_overrides`` is false (the judge).
        """
        ...

    async def walk_complete(
        self, plan: RoutePlan, body_for: BodyFor, ctx: Any
    ) -> tuple[PlanEntry, Completion]:
        """Walk the plan (retries, timeouts, failover) until one deployment answers."""
        ...

    def completion_cost(self, entry: PlanEntry, body: dict[str, Any], c: Completion) -> float:
        """The completion's cost in USD (usage counted by the gateway when unreported)."""
        ...


@dataclass(slots=True)
class Accepted:
    """A tier below the last answered well enough: serve this completion."""

    plan: RoutePlan
    entry: PlanEntry
    completion: Completion
    tier: int


@dataclass(slots=True)
class Escalated:
    """Serve the last tier's plan on the gateway's ordinary path."""

    plan: RoutePlan
    tier: int


@dataclass(slots=True)
class _TierAnswer:
    plan: RoutePlan
    entry: PlanEntry
    completion: Completion
    cost_usd: float
    verdict: Verdict | None
    confidence: float | None
    judge_cost_usd: float


class CascadeDriver:
    """Runs cascade policies for one gateway; holds the policies' compiled checks."""

    def __init__(self, walker: TierWalker) -> None:
        self._walker = walker
        self._checks: dict[CascadePolicy, tuple[AcceptanceCheck, ...]] = {}

    def _checks_for(self, cascade: CascadePolicy) -> tuple[AcceptanceCheck, ...]:
        checks = self._checks.get(cascade)
        if checks is None:
            if len(self._checks) >= _CHECK_CACHE_SIZE:  # old catalogs after reloads
                self._checks.clear()
            checks = build_checks(
                structural=cascade.structural,
                refusal=cascade.refusal,
                min_confidence=cascade.min_confidence,
                refusal_patterns=cascade.refusal_patterns,
            )
            self._checks[cascade] = checks
        return checks

    async def run(
        self,
        catalog: Catalog,
        name: str,
        cascade: CascadePolicy,
        body: dict[str, Any],
        upstream_body: dict[str, Any],
        ctx: Any,
        *,
        last_tier_only: bool = False,
    ) -> Accepted | Escalated:
        """Try tiers below the last; return the first accepted answer or the last tier."""
        rec: Record = ctx.record
        shape = RequestShape.from_body(body)
        checks = self._checks_for(cascade)
        tiers = cascade.tiers
        cheap = () if last_tier_only else tiers[:-1]
        for index, tier in enumerate(cheap, start=1):
            item: dict[str, Any] = {"tier": index, "target": tier.target}
            rec.tiers.append(item)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(tier.timeout_s) as deadline:
                    got = await self._try_tier(
                        catalog, cascade, tier, body, upstream_body, shape, checks, ctx, item
                    )
            except TimeoutError:
                if not deadline.expired():
                    raise
                got = None
                # An answer that arrived before the timeout (say, while the judge ran) was
                # billed: _try_tier wrote its cost into the item as soon as it knew it.
                item.update(
                    outcome="escalated",
                    escalation_reason="tier_timeout",
                    cost_usd=float(item.get("cost_usd") or 0.0),
                )
                item["detail"] = f"no acceptable answer within the tier's {tier.timeout_s}s"
                rec.escalation_reason = rec.escalation_reason or "tier_timeout"
            except (AllDeploymentsFailedError, UpstreamContextWindowError) as exc:
                # Every deployment of the tier failed: reliability's business, not a verdict
                # on an answer. The next tier serves; fallback_reason already says why.
                got = None
                item.update(outcome="failed", cost_usd=0.0, detail=exc.message[:300])
            except (NoFeasibleDeploymentError, PermissionDeniedError) as exc:
                # Nothing in this tier may serve the request (no enabled deployment, or the
                # caller's key may not use it): the next tier serves.
                got = None
                item.update(outcome="skipped", cost_usd=0.0, detail=exc.message[:300])
            item["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            if got is None:
                continue
            item.update(
                deployment=got.entry.deployment.id,
                model=got.entry.deployment.model.name,
                confidence=got.confidence,
            )
            if got.judge_cost_usd:
                item["judge_cost_usd"] = got.judge_cost_usd
            if got.verdict is None:
                # Its answer's cost is added by note_served when the gateway renders it.
                item.update(outcome="accepted", cost_usd=got.judge_cost_usd)
                rec.cost_usd = _spent(rec)
                plan = replace(got.plan, policy=name)
                return Accepted(plan=plan, entry=got.entry, completion=got.completion, tier=index)
            item.update(
                outcome="escalated",
                escalation_reason=got.verdict.reason,
                detail=got.verdict.detail,
                cost_usd=got.cost_usd + got.judge_cost_usd,
            )
            rec.escalation_reason = rec.escalation_reason or got.verdict.reason
        last = tiers[-1]
        plan = self._walker.plan_tier(catalog, routing_view(body, last.target), ctx)
        rec.tiers.append({"tier": len(tiers), "target": last.target, "outcome": "served"})
        rec.tiers[-1]["cost_usd"] = 0.0
        rec.cost_usd = _spent(rec)
        return Escalated(plan=replace(plan, policy=name), tier=len(tiers))

    async def _try_tier(
        self,
        catalog: Catalog,
        cascade: CascadePolicy,
        tier: CascadeTier,
        body: dict[str, Any],
        upstream_body: dict[str, Any],
        shape: RequestShape,
        checks: tuple[AcceptanceCheck, ...],
        ctx: Any,
        item: dict[str, Any],
    ) -> _TierAnswer:
        tier_body = {**upstream_body, "model": tier.target}
        plan = self._walker.plan_tier(catalog, routing_view(body, tier.target), ctx)
        # Ask for logprobs where the deployment has them and a check reads them; strip them
        # again unless the client asked.
        ask_logprobs = cascade.min_confidence is not None and not body.get("logprobs")
        with_logprobs = {**tier_body, "logprobs": True} if ask_logprobs else tier_body

        def body_for(entry: PlanEntry) -> dict[str, Any]:
            caps = entry.deployment.capabilities
            return with_logprobs if ask_logprobs and "logprobs" in caps else tier_body

        entry, completion = await self._walker.walk_complete(plan, body_for, ctx)
        cost = self._walker.completion_cost(entry, tier_body, completion)
        item["cost_usd"] = cost  # kept if the tier's timeout fires while it is being judged
        answer = Answer.from_completion(completion.body)
        if ask_logprobs:
            strip_logprobs_body(completion.body)
        verdict = run_checks(checks, answer, shape)
        judge_cost = 0.0
        if verdict is None and cascade.judge is not None:
            verdict, judge_cost = await self._judge(catalog, cascade.judge, body, answer, ctx)
        return _TierAnswer(plan, entry, completion, cost, verdict, confidence(answer), judge_cost)

    async def _judge(
        self,
        catalog: Catalog,
        judge: JudgeConfig,
        body: dict[str, Any],
        answer: Answer,
        ctx: Any,
    ) -> tuple[Verdict | None, float]:
        """Ask the judge model through the gateway's own routing and reliability walk."""
        request = judge_body(judge, body, answer)
        try:
            plan = self._walker.plan_tier(catalog, request, ctx, client_overrides=False)
            entry, completion = await self._walker.walk_complete(plan, lambda e: request, ctx)
        except GatewayError as exc:
            if judge.accept_on_error:
                return None, 0.0
            return Verdict("judge_rejected", f"the judge failed: {exc.message[:200]}"), 0.0
        cost = self._walker.completion_cost(entry, request, completion)
        reply = Answer.from_completion(completion.body).text
        accepted = judge_accepts(judge, reply)
        if accepted is None:
            accepted = judge.accept_on_error
        if accepted:
            return None, cost
        return (
            Verdict(
                "judge_rejected",
                f"the judge replied {reply[:40]!r}; the policy needs a score of at least "
                f"{judge.min_score:g}",
            ),
            cost,
        )

    def explain(
        self, catalog: Catalog, name: str, cascade: CascadePolicy, body: dict[str, Any], ctx: Any
    ) -> dict[str, Any]:
        """``POST /v1/route`` for a cascade: its settings and each tier's explained plan."""
        tiers: list[dict[str, Any]] = []
        for index, tier in enumerate(cascade.tiers, start=1):
            row: dict[str, Any] = {
                "tier": index,
                "target": tier.target,
                "kind": tier.kind,
                "timeout_s": tier.timeout_s,
            }
            try:
                plan = self._walker.plan_tier(
                    catalog, routing_view(body, tier.target), ctx, explain=True
                )
            except GatewayError as exc:
                row["error"] = {"code": exc.code, "message": exc.message}
            else:
                row.update(plan.explain())
            tiers.append(row)
        judge = cascade.judge
        return {
            "cascade": {
                "policy": name,
                "streaming": cascade.streaming,
                "checks": {
                    "structural": cascade.structural,
                    "refusal": cascade.refusal,
                    "min_confidence": cascade.min_confidence,
                    "judge": None
                    if judge is None
                    else {"target": judge.target, "min_score": judge.min_score},
                },
                "tiers": tiers,
            }
        }


def routing_view(body: dict[str, Any], target: str) -> dict[str, Any]:
    """The body a tier is routed with: its target as ``model``; the client's numeric
    overrides kept, its policy override dropped (the cascade is the policy)."""
    view = {**body, "model": target}
    extra = body.get("pareto")
    if isinstance(extra, dict) and "policy" in extra:
        view["pareto"] = {k: v for k, v in extra.items() if k != "policy"}
    return view


def cascade_name(body: dict[str, Any], headers: Any) -> str:
    """The policy a request names: the ``x-pareto-policy`` / ``pareto.policy`` override, else
    ``model`` (the same precedence as the router's)."""
    name = headers.get("x-pareto-policy")
    if name is None:
        extra = body.get("pareto")
        if isinstance(extra, dict) and isinstance(extra.get("policy"), str):
            name = extra["policy"]
    return str(name if name is not None else body.get("model")).strip()


def _spent(rec: Record) -> float:
    return sum(float(t.get("cost_usd") or 0.0) for t in rec.tiers)


def note_served(rec: Record, deployment: str, model: str, cost_usd: float) -> None:
    """Add the served answer's cost to its tier (called when the record is finished)."""
    if not rec.tiers:
        return
    item = rec.tiers[-1]
    item["cost_usd"] = float(item.get("cost_usd") or 0.0) + cost_usd
    item.setdefault("deployment", deployment)
    item.setdefault("model", model)


def note_failed(rec: Record) -> None:
    """The request failed in its current tier (e.g. every deployment of the last tier)."""
    if rec.tiers and rec.tiers[-1].get("outcome") in (None, "served"):
        rec.tiers[-1]["outcome"] = "failed"


def cascade_headers(rec: Record) -> dict[str, str]:
    """Response headers naming the tier that answered and why cheaper tiers did not."""
    if not rec.tiers:
        return {}
    served = rec.tiers[-1]
    headers = {
        "x-pareto-tier": str(served["tier"]),
        "x-pareto-tier-target": str(served["target"]),
        "x-pareto-tiers-tried": str(len(rec.tiers)),
    }
    if rec.escalation_reason:
        headers["x-pareto-escalation-reason"] = rec.escalation_reason
    return headers
