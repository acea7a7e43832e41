"""Phase two of the config: frozen, slotted runtime types built once per (re)load.

The request path reads only these. Prices are kept in USD per token (not per million) so the
cost model does no division per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.auth.config import AuthConfig, BudgetPressureSpec
from app.catalog.cascade import CascadePolicy
from app.catalog.spec import FaultSpec, ReliabilitySpec, SimulationSpec

if TYPE_CHECKING:
    from app.routing.learned import LearnedScorer


@dataclass(frozen=True, slots=True)
class Model:
    """A logical model with its quality scores and capabilities."""

    name: str
    quality: float
    quality_by_category: Mapping[str, float]
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str]

    def quality_for(self, category: str | None) -> float:
        """Quality for a task category, falling back to the overall score."""
        if category is None:
            return self.quality
        return self.quality_by_category.get(category, self.quality)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model at a provider: prices (USD per token), speeds, endpoint and credentials."""

    id: str
    model: Model
    provider: str
    kind: str
    base_url: str | None
    upstream_model: str
    headers: Mapping[str, str]
    price_input: float
    price_cached_input: float
    price_output: float
    batch_discount: float
    ttft_s: float
    decode_tps: float
    context_window: int
    capabilities: frozenset[str]
    connect_timeout_s: float | None
    first_token_timeout_s: float | None
    total_timeout_s: float | None
    simulation: SimulationSpec | None
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)
    prompt_cache: bool = False
    # Input written to the provider's prompt cache (5-minute / 1-hour). The loader always
    # sets them (Anthropic's multipliers when the config leaves them out); None = input price.
    price_cache_write: float | None = None
    price_cache_write_1h: float | None = None
    # Anthropic caches no prompt shorter than this (model-dependent).
    prompt_cache_min_tokens: int = 1024

    @property
    def faults(self) -> FaultSpec:
        return self.simulation.faults if self.simulation else FaultSpec()

    def caches_prompt(self, setting: bool | None) -> bool:
        """Whether the gateway marks a request's prompt for this deployment's prompt cache
        (``cache_control`` breakpoints: Anthropic only). ``setting`` is the policy's
        ``prompt_cache``, which wins; None defers to the deployment's own."""
        return self.kind == "anthropic" and (self.prompt_cache if setting is None else setting)

    def static_cost_usd(
        self,
        n_in: int,
        n_out: int,
        n_cached: int = 0,
        n_cache_write: int = 0,
        n_cache_write_1h: int = 0,
    ) -> float:
        """``n_in·p_in + n_out·p_out`` with each part of the input at its own price.

        ``n_in`` counts every input token: ``n_cached`` of them were read from the provider's
        prompt cache, ``n_cache_write`` written to it (``n_cache_write_1h`` of those to the
        1-hour cache); the rest are fresh.
        """
        fresh = max(n_in - n_cached - n_cache_write, 0)
        cost = (
            fresh * self.price_input
            + n_cached * self.price_cached_input
            + n_out * self.price_output
        )
        if n_cache_write:
            write = self.price_input if self.price_cache_write is None else self.price_cache_write
            write_1h = write if self.price_cache_write_1h is None else self.price_cache_write_1h
            cost += (n_cache_write - n_cache_write_1h) * write + n_cache_write_1h * write_1h
        return cost

    def static_latency_s(self, n_out: int) -> float:
        """``TTFT + n_out / decode_tps`` from the catalog's figures."""
        return self.ttft_s + n_out / self.decode_tps


@dataclass(frozen=True, slots=True)
class Policy:
    """A named routing behaviour with its numbers resolved."""

    name: str
    description: str
    lambda_cost: float
    lambda_latency: float
    quality_floor: float | str | None
    max_cost_usd: float | None
    max_latency_ms: float | None
    best_effort: bool
    models: frozenset[str] | None
    reliability: ReliabilitySpec | None = None
    cascade: CascadePolicy | None = None
    max_fallbacks: int = 3
    # Anthropic prompt caching for this policy's requests; None = each deployment's setting.
    prompt_cache: bool | None = None
    # A trained quality predictor (``learned_router:``); None = catalog quality per category.
    learned: LearnedScorer | None = field(default=None, compare=False)
    budget_pressure: BudgetPressureSpec | None = None


@dataclass(frozen=True, slots=True)
class FloorRule:
    """A heuristic quality-floor rule; ``None`` conditions match anything."""

    floor: float
    categories: frozenset[str] | None = None
    difficulties: frozenset[str] | None = None
    min_input_tokens: int | None = None

    def matches(self, category: str, difficulty: str, input_tokens: int) -> bool:
        return (
            (self.categories is None or category in self.categories)
            and (self.difficulties is None or difficulty in self.difficulties)
            and (self.min_input_tokens is None or input_tokens >= self.min_input_tokens)
        )

    def describe(self) -> str:
        parts = []
        if self.categories is not None:
            parts.append("category in " + "/".join(sorted(self.categories)))
        if self.difficulties is not None:
            parts.append("difficulty in " + "/".join(sorted(self.difficulties)))
        if self.min_input_tokens is not None:
            parts.append(f"input >= {self.min_input_tokens} tokens")
        return " and ".join(parts) or "default"


# Used when a config has no ``routing:`` section (e.g. a catalog without policies.yaml).
DEFAULT_OUTPUT_PRIORS: Mapping[str, int] = {
    "chat": 200,
    "code": 800,
    "math": 700,
    "extraction": 200,
    "summarization": 300,
    "translation": 400,
    "creative": 600,
}


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The content heuristic's editable settings (``routing:`` in ``config/policies.yaml``)."""

    floor_rules: tuple[FloorRule, ...] = ()
    output_tokens_prior: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_OUTPUT_PRIORS)
    )
    ewma_alpha: float = 0.2
    prior_weight: float = 5.0
    queue_capacity: float = 32.0


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every model, enabled deployment and policy of one loaded config."""

    source: str
    snapshot_date: str | None
    models: Mapping[str, Model]
    deployments: tuple[Deployment, ...]
    by_model: Mapping[str, tuple[Deployment, ...]]
    by_id: Mapping[str, Deployment]
    policies: Mapping[str, Policy]
    default_policy: str | None
    disabled: Mapping[str, str]
    auth: AuthConfig = field(default_factory=AuthConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    # Names of the cascade policies, so plain requests skip the cascade check cheaply.
    cascades: frozenset[str] = frozenset()

    def names(self) -> list[str]:
        """Every name a client may put in ``model``: models then policies."""
        return sorted(self.by_model) + sorted(self.policies)
