"""The stateful front of the routing package, held by the gateway (still no I/O).

:class:`Router` keeps what outlives one request — the current catalog's
:class:`CatalogTable`, :class:`LiveEstimates` and :class:`OutputPriors` — and turns a
chat-completions body plus headers into a :class:`RoutePlan`:

    features (content heuristic) → policy (+ overrides) → plan_route (constraints, Pareto,
    utility, fallbacks)

Inputs other parts of the gateway supply:

- ``unavailable``: ids of deployments that must not be tried (open circuit breakers). Either
  pass it to :meth:`Router.route` or set ``Router.health`` to a zero-argument callable that
  returns the current set.
- ``sticky``: a session's sticky deployment and cached prefix tokens (:class:`Sticky`).
- ``quality``: a :class:`QualityEstimator` (e.g. a learned per-model predictor).
- ``budget_factor``: multiplies ``lambda_cost`` (see :func:`resolve_policy`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

from app.catalog.model import Catalog, Policy
from app.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError
from app.routing.features import Features, extract_features
from app.routing.learned import LearnedQuality
from app.routing.live import LiveEstimates, OutputPriors
from app.routing.overrides import NO_OVERRIDES, Overrides, parse_overrides
from app.routing.plan import RoutePlan
from app.routing.planner import LiveView, plan_route
from app.routing.policy import ResolvedPolicy, resolve_policy
from app.routing.quality import QualityEstimator
from app.routing.sticky import Sticky
from app.routing.table import CatalogTable

# Used for a pinned model when the config has no default policy: the model is fixed, so the
# choice is among its providers, cost first (latency breaks near-ties).
PINNED_POLICY = Policy(
    name="pinned",
    description="a concrete model was named: route among its deployments, cost first",
    lambda_cost=10000.0,
    lambda_latency=0.1,
    quality_floor=None,
    max_cost_usd=None,
    max_latency_ms=None,
    best_effort=False,
    models=None,
)
_EMPTY: frozenset[str] = frozenset()
# Bound on memoised resolved policies (budget factors vary continuously): a full memo is
# dropped and refilled, so memory stays flat.
MAX_RESOLVED = 1024


def _rules_read_tokens(catalog: Catalog) -> bool:
    return any(rule.min_input_tokens is not None for rule in catalog.routing.floor_rules)


class Router:
    """Routes requests against the current catalog; learns from finished attempts."""

    def __init__(self, catalog: Catalog, quality: QualityEstimator | None = None) -> None:
        cfg = catalog.routing
        self.live = LiveEstimates(cfg.ewma_alpha, cfg.prior_weight, cfg.queue_capacity)
        self.priors = OutputPriors(cfg.output_tokens_prior)
        self.quality = quality
        self.health: Callable[[], Collection[str]] | None = None
        self._table = CatalogTable(catalog)
        self.live.bind(self._table)
        self._resolved: dict[tuple[object, ...], tuple[Policy, ResolvedPolicy]] = {}
        self._rules_read_tokens = _rules_read_tokens(catalog)
        self._live_view = LiveView(self.live.matrix)

    # -- catalog ----------------------------------------------------------------------------
    @property
    def table(self) -> CatalogTable:
        return self._table

    def bind(self, catalog: Catalog) -> None:
        """Precompute the new catalog's arrays (on load and on every hot reload)."""
        cfg = catalog.routing
        table = CatalogTable(catalog)
        self.live.configure(cfg.ewma_alpha, cfg.prior_weight, cfg.queue_capacity)
        self.live.bind(table)
        self.priors.configure(cfg.output_tokens_prior)
        self._resolved = {}
        self._rules_read_tokens = _rules_read_tokens(catalog)
        self._live_view = LiveView(self.live.matrix)
        self._table = table

    def table_for(self, catalog: Catalog) -> CatalogTable:
        """The precomputed table for ``catalog`` (a request that began before a reload gets a
        table of its own catalog, built on the spot)."""
        table = self._table
        return table if table.catalog is catalog else CatalogTable(catalog)

    # -- decisions ---------------------------------------------------------------------------
    def features(self, body: Mapping[str, Any], input_tokens: int | None = None) -> Features:
        """The content heuristic for one body, with the live output priors."""
        return extract_features(body, self.priors.current, input_tokens)

    def resolve(
        self,
        catalog: Catalog,
        model: str,
        features: Features,
        overrides: Overrides = NO_OVERRIDES,
        budget_factor: float = 1.0,
        allowed_models: frozenset[str] | None = None,
    ) -> ResolvedPolicy:
        """Which policy applies (``model`` = a policy or a model name; header/body overrides
        win) and its numbers for this request."""
        pinned: str | None = None
        if overrides.policy is not None:
            policy = catalog.policies.get(overrides.policy)
            if policy is None:
                raise InvalidRequestError(
                    f"x-pareto-policy / pareto.policy names unknown policy {overrides.policy!r};"
                    f" use one of {', '.join(sorted(catalog.policies))}",
                    param="pareto.policy",
                    code="invalid_routing_override",
                )
            if model not in catalog.policies:
                pinned = self._model(catalog, model)
        elif model in catalog.policies:
            policy = catalog.policies[model]
        else:
            pinned = self._model(catalog, model)
            default = catalog.default_policy
            policy = catalog.policies[default] if default else PINNED_POLICY
        rules = catalog.routing.floor_rules
        if overrides is not NO_OVERRIDES or catalog is not self._table.catalog:
            return resolve_policy(
                policy,
                features,
                rules,
                overrides,
                pinned_model=pinned,
                budget_factor=budget_factor,
                allowed_models=allowed_models,
            )
        # Without overrides the features only matter through the floor rules' inputs
        # (category, difficulty, and input tokens when a rule reads them), so the resolved
        # numbers are shared by every request with the same key (memoised per catalog).
        key = (
            policy.name,
            pinned,
            budget_factor,
            allowed_models,
            features.category,
            features.difficulty,
            features.input_tokens if self._rules_read_tokens else None,
        )
        hit = self._resolved.get(key)
        if hit is not None and hit[0] is policy:  # the name alone could be a stale object
            return hit[1]
        resolved = resolve_policy(
            policy,
            features,
            rules,
            pinned_model=pinned,
            budget_factor=budget_factor,
            allowed_models=allowed_models,
        )
        if len(self._resolved) >= MAX_RESOLVED:
            self._resolved.clear()
        self._resolved[key] = (policy, resolved)
        return resolved

    @staticmethod
    def _model(catalog: Catalog, model: str) -> str:
        if model in catalog.models:
            return model
        raise ModelNotFoundError(
            f"model {model!r} does not exist; use one of: {', '.join(catalog.names())}",
            param="model",
        )

    def route(
        self,
        catalog: Catalog,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        unavailable: Collection[str] | None = None,
        sticky: Sticky | None = None,
        budget_factor: float = 1.0,
        allowed_models: frozenset[str] | None = None,
        explain: bool = False,
        input_tokens: int | None = None,
        policy_prompt_cache: bool = True,
    ) -> RoutePlan:
        """Features → policy → plan for one chat-completions body (see the module docstring).

        ``allowed_models``: the models the caller's API key may use (``None`` = any).
        ``policy_prompt_cache=False``: the calls will not apply the policy's
        ``prompt_cache`` (a cascade's tiers): estimate with each deployment's own setting.
        """
        overrides = parse_overrides(headers, body)
        features = extract_features(body, self.priors.current, input_tokens)
        policy = self.resolve(
            catalog, str(body.get("model")), features, overrides, budget_factor, allowed_models
        )
        if not policy_prompt_cache and policy.prompt_cache is not None:
            policy = replace(policy, prompt_cache=None)
        table = self._table
        if table.catalog is not catalog:  # a request that began before a reload
            table = CatalogTable(catalog)
        if allowed_models is not None and not table.model_mask(policy.models).any():
            raise PermissionDeniedError(
                f"policy {policy.name!r} has no model that your API key may use; call one of "
                "your key's models directly, or ask the admin to widen the key",
                param="model",
            )
        live: LiveView | None = None
        if table is self.live.table:
            live = self._live_view
            if live.matrix is not self.live.matrix:  # the estimates were rebound
                live = self._live_view = LiveView(self.live.matrix)
        if unavailable is None:
            unavailable = self.health() if self.health is not None else _EMPTY
        quality = self.quality
        configured = catalog.policies.get(policy.name)
        if configured is not None and configured.learned is not None:
            # The policy's trained router predicts q for this request's text.
            quality = LearnedQuality(configured.learned, body.get("messages") or [])
        return plan_route(
            table,
            features,
            policy,
            live=live,
            unavailable=unavailable,
            quality=quality,
            sticky=sticky,
            explain=explain,
        )

    # -- telemetry in ------------------------------------------------------------------------
    def attempt_started(self, deployment_id: str) -> None:
        self.live.started(deployment_id)

    def attempt_finished(
        self,
        deployment_id: str,
        *,
        ok: bool,
        total_s: float | None = None,
        ttft_s: float | None = None,
        output_tokens: int = 0,
    ) -> None:
        """An attempt ended; ``ttft_s`` only for streams (non-streamed total time is used)."""
        self.live.finished(
            deployment_id, ok=ok, total_s=total_s, ttft_s=ttft_s, output_tokens=output_tokens
        )

    def output_observed(self, plan: RoutePlan, output_tokens: int) -> None:
        """Refine the output prior of the request's category (only when it used the prior)."""
        features = plan.features
        if features is not None and features.output_tokens_source == "prior":
            self.priors.observe(features.category, output_tokens)
