"""Prometheus metrics: every metric the gateway exports, fed from one finished :class:`Record`.

The contract for everyone else
------------------------------
Nobody outside this module touches a metric on the request path. A stage that learns
something about a request writes it into the request's :class:`~app.telemetry.record.Record`;
:meth:`Metrics.observe` (called once per request by :mod:`app.telemetry.emit`) turns the
finished record into every metric below:

======================================================  ======================================
metric (labels)                                         from the record
======================================================  ======================================
``pareto_requests_total`` (model, deployment,           one per request; ``status`` is the
policy, status)                                         HTTP status (499 = client went away);
                                                        policy ``none`` for a 401/403 (refused
                                                        before any routing)
``pareto_ttft_seconds`` (model, deployment)             ``ttft_ms``
``pareto_decode_tokens_per_second`` (model, deployment) ``decode_tps``
``pareto_request_duration_seconds`` (model, deployment) ``total_latency_ms``
``pareto_gateway_overhead_seconds`` (mode)              ``gateway_overhead_ms`` (mode = stream or
                                                        complete)
``pareto_routing_decision_seconds`` (policy)            ``routing_ms``
``pareto_cost_usd_total`` (model, deployment)           ``cost_usd`` (a cascade's escalated
                                                        ``tiers`` items: their own deployment)
``pareto_input_tokens_total`` / ``pareto_cached_input   ``input_tokens`` / ``cached_input_tokens``
_tokens_total`` / ``pareto_cache_write_input_tokens     / ``cache_write_input_tokens`` /
_total`` / ``pareto_output_tokens_total``               ``output_tokens``
(model, deployment)
``pareto_fallbacks_total`` (reason) and                 each ``attempt_log`` item that has a
``pareto_upstream_failures_total`` (deployment, reason) ``fallback_reason`` (one failed attempt)
``pareto_escalations_total`` (reason)                   each ``tiers`` item with an
                                                        ``escalation_reason``; if ``tiers`` has
                                                        none, ``escalation_reason`` once
``pareto_session_requests_total`` /                     ``session_sticky`` is not None / True
``pareto_session_sticky_hits_total``
``pareto_session_switches_total`` (reason)              ``session_switch_reason``
======================================================  ======================================

So the reliability layer fills ``attempt_log`` (``{"deployment", "fallback_reason", ...}`` per
attempt), the cascade fills ``tiers``/``escalation_reason``, sessions fill
``session_sticky``/``session_switch_reason``, and their metrics follow. Whoever waits on an
upstream adds that wall time to ``record.upstream_ms`` (see :mod:`app.telemetry.timing`), so
``gateway_overhead_ms`` stays honest.

Two gauges are not per request: ``pareto_breaker_state`` (a deployment's circuit breaker:
``closed``, ``half_open``, ``open`` → 0/1/2) and ``pareto_redis_degraded`` (1 while shared
state falls back to process memory). Their owners register a cheap synchronous source once
(:meth:`Metrics.track_breakers`, :meth:`Metrics.track_redis`; the app wires the reliability
layer's breakers and the session store) which is read on every scrape and once a second
(:meth:`Metrics.keep_fresh`, so every worker's value stays current in multiprocess mode); a
layer may also push a change directly (:meth:`Metrics.breaker_changed`,
:meth:`Metrics.redis_degraded`). The app's :class:`Metrics` is ``app.state.metrics`` and
``gateway.metrics``.

Labels are bounded: model, deployment and policy names come from the catalog, statuses are
HTTP codes, reasons come from closed vocabularies (pre-created at start so dashboards have
series before the first event, as are the refusals' ``pareto_requests_total`` series: model,
deployment and policy ``none``, status 401 and 403). Never an id. Reasons outside a
vocabulary are counted as ``other``.

Several uvicorn workers: ``pareto serve --workers N`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before the workers start; each worker writes its values there and ``GET
/metrics`` on any worker merges them all (:meth:`Metrics.render`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.catalog.model import Catalog
from app.errors import FALLBACK_REASONS
from app.telemetry.record import Record

ESCALATION_REASONS: Final[tuple[str, ...]] = (
    "low_confidence",
    "invalid_json",
    "schema_mismatch",
    "refusal",
    "truncated",
    "judge_rejected",
    "tier_timeout",
)
SWITCH_REASONS: Final[tuple[str, ...]] = (
    "unhealthy",
    "infeasible",
    "better_utility",
    "policy_changed",
    "expired",
)
BREAKER_STATES: Final[dict[str, float]] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
OTHER = "other"
NONE = "none"
DIRECT = "direct"  # the client named a catalog model, not a routing policy
# Refused by authentication or access control: no policy was chosen, so none is claimed.
_REFUSED: Final = frozenset({401, 403})

# Buckets in the metric's unit, spanning what real deployments do.
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
DECODE_BUCKETS = (10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 4000)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25)
ROUTING_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when several workers serve (set by ``pareto serve``)."""
    return os.environ.get(MULTIPROC_ENV) or None


class _DeploymentSeries:
    """The children of one (model, deployment): looked up once, then reused per request."""

    __slots__ = (
        "ttft",
        "decode",
        "latency",
        "cost",
        "input_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "output_tokens",
    )

    def __init__(self, m: Metrics, model: str, deployment: str) -> None:
        self.ttft = m.ttft.labels(model, deployment)
        self.decode = m.decode.labels(model, deployment)
        self.latency = m.latency.labels(model, deployment)
        self.cost = m.cost.labels(model, deployment)
        self.input_tokens = m.input_tokens.labels(model, deployment)
        self.cached_tokens = m.cached_tokens.labels(model, deployment)
        self.cache_write_tokens = m.cache_write_tokens.labels(model, deployment)
        self.output_tokens = m.output_tokens.labels(model, deployment)


class Metrics:
    """The gateway's metrics in one registry; :meth:`observe` is the per-request entry point."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Each app gets its own registry (tests build many apps in one process). In
        # multiprocess mode the values live in PROMETHEUS_MULTIPROC_DIR; render() merges them.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._multiproc_dir = multiprocess_dir()
        r = self.registry
        self.requests = Counter(
            "pareto_requests",
            "Chat requests by served model, deployment, routing policy and HTTP status "
            "(499: the client disconnected; model/deployment 'none': no deployment served it)",
            ["model", "deployment", "policy", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "pareto_ttft_seconds",
            "Time from the request's arrival to the first token of the answer",
            ["model", "deployment"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.decode = Histogram(
            "pareto_decode_tokens_per_second",
            "Output tokens per second after the first token",
            ["model", "deployment"],
            buckets=DECODE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "pareto_request_duration_seconds",
            "Total request latency, arrival to last byte (streams: last byte or disconnect)",
            ["model", "deployment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "pareto_gateway_overhead_seconds",
            "Latency the gateway itself adds: total minus time waiting on upstreams and on "
            "the client",
            ["mode"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.routing = Histogram(
            "pareto_routing_decision_seconds",
            "Time the router took to build the request's plan",
            ["policy"],
            buckets=ROUTING_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "pareto_cost_usd",
            "Spend in US dollars from upstream usage and catalog prices",
            ["model", "deployment"],
            registry=r,
        )
        self.input_tokens = Counter(
            "pareto_input_tokens",
            "Prompt tokens sent upstream (cached ones included)",
            ["model", "deployment"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "pareto_cached_input_tokens",
            "Prompt tokens the upstream served from its prompt cache",
            ["model", "deployment"],
            registry=r,
        )
        self.cache_write_tokens = Counter(
            "pareto_cache_write_input_tokens",
            "Prompt tokens the upstream wrote to its prompt cache (billed above input)",
            ["model", "deployment"],
            registry=r,
        )
        self.output_tokens = Counter(
            "pareto_output_tokens",
            "Completion tokens received from upstreams",
            ["model", "deployment"],
            registry=r,
        )
        self.fallbacks = Counter(
            "pareto_fallbacks",
            "Failed upstream attempts by fallback reason (each moved the request on to its "
            "next attempt, or ended it when none was left)",
            ["reason"],
            registry=r,
        )
        self.upstream_failures = Counter(
            "pareto_upstream_failures",
            "Failed upstream attempts by deployment and fallback reason",
            ["deployment", "reason"],
            registry=r,
        )
        self.escalations = Counter(
            "pareto_escalations",
            "Cascade escalations to a stronger tier, by the check that rejected the answer",
            ["reason"],
            registry=r,
        )
        self.session_requests = Counter(
            "pareto_session_requests",
            "Requests that carried a session id",
            registry=r,
        )
        self.sticky_hits = Counter(
            "pareto_session_sticky_hits",
            "Session requests served by the session's sticky deployment",
            registry=r,
        )
        self.session_switches = Counter(
            "pareto_session_switches",
            "Sessions moved to another deployment, by reason",
            ["reason"],
            registry=r,
        )
        self.breaker = Gauge(
            "pareto_breaker_state",
            "Circuit breaker of a deployment: 0 closed, 1 half-open, 2 open (max over workers)",
            ["deployment"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.breaker_opens = Counter(
            "pareto_breaker_opens",
            "Circuit breakers opened, by deployment and cause (consecutive_failures, "
            "error_rate, probe_failed, auth_failed: an upstream 401/403, which needs an operator)",
            ["deployment", "cause"],
            registry=r,
        )
        self.redis = Gauge(
            "pareto_redis_degraded",
            "1 while Redis is unreachable and shared state falls back to process memory",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.budget = Gauge(
            "pareto_spend_budget_usd_per_hour",
            "The operator's spend budget (PARETO_SPEND_BUDGET_USD_PER_HOUR), for alerting",
            multiprocess_mode="livemax",
            registry=r,
        )
        # Precomputed children: the request path does one dict lookup per family.
        self._requests: dict[tuple[str, str, str, int], Counter] = {
            # Refusals' series exist from the start, so a rate shows the first one (a series
            # born at 1 has no increase to see); the dashboards' auth panel reads them.
            (NONE, NONE, NONE, status): self.requests.labels(NONE, NONE, NONE, str(status))
            for status in sorted(_REFUSED)
        }
        self._deployments: dict[tuple[str, str], _DeploymentSeries] = {}
        self._overhead = {
            True: self.overhead.labels("stream"),
            False: self.overhead.labels("complete"),
        }
        self._routing: dict[str, Histogram] = {}
        self._fallbacks = {r_: self.fallbacks.labels(r_) for r_ in (*FALLBACK_REASONS, OTHER)}
        self._escalations = {r_: self.escalations.labels(r_) for r_ in (*ESCALATION_REASONS, OTHER)}
        self._switches = {r_: self.session_switches.labels(r_) for r_ in (*SWITCH_REASONS, OTHER)}
        self._failures: dict[tuple[str, str], Counter] = {}
        self._breakers: dict[str, Gauge] = {}
        self._breaker_sources: list[Callable[[], Mapping[str, str]]] = []
        self._redis_sources: list[Callable[[], bool]] = []
        self._redis_pushed = False
        self.redis.set(0)

    # -- setup ------------------------------------------------------------------------------
    def prepare(self, catalog: Catalog) -> None:
        """Pre-create every deployment's series (call again after a catalog reload)."""
        for dep in catalog.deployments:
            self._series(dep.model.name, dep.id)
            if dep.id not in self._breakers:  # 0 = closed until the breaker says otherwise
                self._breakers[dep.id] = self.breaker.labels(dep.id)
            self._routing_child(DIRECT)
        for policy in catalog.policies:
            self._routing_child(policy)

    def set_budget(self, usd_per_hour: float | None) -> None:
        if usd_per_hour:
            self.budget.set(usd_per_hour)

    # -- state owned elsewhere --------------------------------------------------------------
    def track_breakers(self, source: Callable[[], Mapping[str, str]]) -> None:
        """Register ``() -> {deployment: closed | half_open | open}`` (cheap, synchronous)."""
        self._breaker_sources.append(source)

    def track_redis(self, source: Callable[[], bool]) -> None:
        """Register ``() -> True while Redis is unreachable`` (cheap, synchronous)."""
        self._redis_sources.append(source)

    def breaker_changed(self, deployment: str, state: str) -> None:
        """Push one breaker's new state (``closed``, ``half_open`` or ``open``)."""
        child = self._breakers.get(deployment)
        if child is None:
            child = self._breakers[deployment] = self.breaker.labels(deployment)
        child.set(BREAKER_STATES.get(state, 2.0))

    def breaker_opened(self, deployment: str, cause: str) -> None:
        """Push: this process opened a deployment's breaker (counted once, where it opened)."""
        self.breaker_opens.labels(deployment, cause).inc()
        self.breaker_changed(deployment, "open")

    def redis_degraded(self, degraded: bool) -> None:
        """Push: Redis went away (True) or came back (False)."""
        self._redis_pushed = degraded
        self.refresh()

    def refresh(self) -> None:
        """Read the registered sources into the gauges."""
        for source in self._breaker_sources:
            for deployment, state in source().items():
                self.breaker_changed(deployment, state)
        degraded = self._redis_pushed or any(source() for source in self._redis_sources)
        self.redis.set(1.0 if degraded else 0.0)

    async def keep_fresh(self, interval_s: float = 1.0) -> None:
        """Refresh the state gauges until cancelled (run by the app's lifespan)."""
        while True:
            self.refresh()
            await asyncio.sleep(interval_s)

    # -- the per-request entry point --------------------------------------------------------
    def observe(self, rec: Record) -> None:
        """Turn one finished record into every metric it feeds (see the module docstring)."""
        model = rec.model or NONE
        deployment = rec.deployment or NONE
        policy = rec.router_policy or (NONE if rec.status in _REFUSED else DIRECT)
        key = (model, deployment, policy, rec.status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(
                model, deployment, policy, str(rec.status)
            )
        child.inc()
        cost = rec.cost_usd
        if rec.tiers:  # a cascade: escalated tiers' spend goes to the deployments that spent it
            cost -= self._count_tier_costs(rec)
        if rec.deployment is not None:
            series = self._series(model, deployment)
            if rec.ttft_ms is not None:
                series.ttft.observe(rec.ttft_ms / 1000)
            if rec.decode_tps is not None:
                series.decode.observe(rec.decode_tps)
            series.latency.observe(rec.total_latency_ms / 1000)
            if cost > 0:
                series.cost.inc(cost)
            if rec.input_tokens:
                series.input_tokens.inc(rec.input_tokens)
            if rec.cached_input_tokens:
                series.cached_tokens.inc(rec.cached_input_tokens)
            if rec.cache_write_input_tokens:
                series.cache_write_tokens.inc(rec.cache_write_input_tokens)
            if rec.output_tokens:
                series.output_tokens.inc(rec.output_tokens)
        if rec.gateway_overhead_ms is not None:
            self._overhead[rec.stream].observe(rec.gateway_overhead_ms / 1000)
        if rec.routing_ms is not None:
            self._routing_child(policy).observe(rec.routing_ms / 1000)
        for attempt in rec.attempt_log:
            reason = attempt.get("fallback_reason")
            if reason:
                self._count_failure(str(attempt.get("deployment") or NONE), str(reason))
        self._count_escalations(rec)
        if rec.session_sticky is not None:
            self.session_requests.inc()
            if rec.session_sticky:
                self.sticky_hits.inc()
        if rec.session_switch_reason:
            self._pick(self._switches, rec.session_switch_reason).inc()

    # -- exposition -------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The exposition text; with several workers, merged across all of them."""
        self.refresh()
        if self._multiproc_dir:
            registry = CollectorRegistry()
            # prometheus_client leaves these two untyped.
            multiprocess.MultiProcessCollector(registry, path=self._multiproc_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """A worker is stopping: its live gauges (breakers, Redis) stop counting."""
        if self._multiproc_dir:
            multiprocess.mark_process_dead(os.getpid(), self._multiproc_dir)  # type: ignore[no-untyped-call]

    # -- helpers ----------------------------------------------------------------------------
    def _series(self, model: str, deployment: str) -> _DeploymentSeries:
        series = self._deployments.get((model, deployment))
        if series is None:
            series = self._deployments[(model, deployment)] = _DeploymentSeries(
                self, model, deployment
            )
        return series

    def _routing_child(self, policy: str) -> Histogram:
        child = self._routing.get(policy)
        if child is None:
            child = self._routing[policy] = self.routing.labels(policy)
        return child

    def _count_failure(self, deployment: str, reason: str) -> None:
        self._pick(self._fallbacks, reason).inc()
        reason = reason if reason in self._fallbacks else OTHER
        child = self._failures.get((deployment, reason))
        if child is None:
            child = self._failures[(deployment, reason)] = self.upstream_failures.labels(
                deployment, reason
            )
        child.inc()

    def _count_tier_costs(self, rec: Record) -> float:
        spent = 0.0
        for tier in rec.tiers:
            cost = tier.get("cost_usd")
            dep = tier.get("deployment")
            if tier.get("outcome") == "escalated" and dep and cost:
                self._series(str(tier.get("model") or NONE), str(dep)).cost.inc(float(cost))
                spent += float(cost)
        return spent

    def _count_escalations(self, rec: Record) -> None:
        counted = False
        for tier in rec.tiers:
            reason = tier.get("escalation_reason")
            if reason:
                self._pick(self._escalations, str(reason)).inc()
                counted = True
        if not counted and rec.escalation_reason:
            self._pick(self._escalations, rec.escalation_reason).inc()

    @staticmethod
    def _pick(children: dict[str, Counter], reason: str) -> Counter:
        return children.get(reason) or children[OTHER]
