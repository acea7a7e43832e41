"""Phase one of the config: the YAML's shape, validated with pydantic (``extra="forbid"``).

These classes describe what a person writes in ``config/*.yaml``. They are compiled once into
the frozen runtime types of :mod:`app.catalog.model`; the request path never sees them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.auth.config import AuthSpec, BudgetPressureSpec
from app.catalog.cascade import CascadeSpec

Capability = Literal["tools", "vision", "json", "logprobs"]
ProviderKind = Literal["openai_compat", "anthropic", "simulated"]
CATEGORIES: tuple[str, ...] = (
    "code",
    "math",
    "extraction",
    "summarization",
    "translation",
    "creative",
    "chat",
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    """A logical model and its quality scores (0-100, e.g. an intelligence index)."""

    quality: float = Field(ge=0, le=100)
    quality_by_category: dict[str, float] = Field(default_factory=dict)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(default=16384, gt=0)
    capabilities: list[Capability] = Field(default_factory=list)
    description: str = ""

    @field_validator("quality_by_category")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        for name, q in value.items():
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r}; use one of {', '.join(CATEGORIES)}")
            if not 0 <= q <= 100:
                raise ValueError(f"quality for {name!r} must be within 0..100, got {q}")
        return value


class PriceSpec(_Spec):
    """USD per million tokens.

    ``cache_write`` prices input tokens written to a provider's prompt cache (Anthropic's
    ``cache_creation_input_tokens``, 5-minute cache), ``cache_write_1h`` those written to the
    1-hour cache. Anthropic bills them above the plain input price, so left out they default
    to its published multipliers on ``kind: anthropic`` (1.25x and 2x input) and to ``input``
    elsewhere (see :mod:`app.catalog.loader`).
    """

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0, description="defaults to input")
    cache_write: float | None = Field(
        default=None, ge=0, description="defaults to 1.25x input (anthropic) or input"
    )
    cache_write_1h: float | None = Field(
        default=None, ge=0, description="defaults to 2x input (anthropic) or cache_write"
    )
    batch_discount: float = Field(default=0.0, ge=0, lt=1, description="fraction off, batch API")


class FaultSpec(_Spec):
    """Faults the simulated provider injects (fractions of requests, 0..1)."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: list[int] = Field(default_factory=lambda: [500])
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    slow_first_token_rate: float = Field(default=0.0, ge=0, le=1)
    slow_first_token_s: float = Field(default=5.0, ge=0)
    cut_rate: float = Field(default=0.0, ge=0, le=1, description="streams cut after a few chunks")


class SimulationSpec(_Spec):
    """How a simulated deployment behaves (speeds default to the deployment's figures)."""

    output_tokens: int = Field(default=64, gt=0, description="answer length when no max_tokens")
    ttft_s: float | None = Field(default=None, ge=0)
    decode_tps: float | None = Field(default=None, gt=0)
    realtime: bool = Field(default=True, description="sleep for TTFT/decode; false = instant")
    seed: int = 0
    faults: FaultSpec = Field(default_factory=FaultSpec)
    prefix_cache: bool = Field(default=True, description="emulate a provider prompt cache")
    cache_min_tokens: int = Field(
        default=0, ge=0, description="shortest cacheable prefix (OpenAI caches from 1024)"
    )
    cache_ttl_s: float | None = Field(
        default=600.0, gt=0, description="a cached prefix unused this long is dropped"
    )


class DeploymentSpec(_Spec):
    """A model served by one provider: prices, speeds, and how to reach it."""

    model: str | None = Field(default=None, description="defaults to the id's part before '@'")
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = Field(default=None, description="name sent upstream")
    headers: dict[str, str] = Field(default_factory=dict)
    price: PriceSpec
    ttft_s: float = Field(gt=0)
    decode_tps: float = Field(gt=0)
    context_window: int | None = Field(default=None, gt=0, description="overrides the model's")
    capabilities: list[Capability] | None = Field(default=None, description="overrides the model's")
    connect_timeout_s: float | None = Field(default=None, gt=0)
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    total_timeout_s: float | None = Field(default=None, gt=0)
    simulation: SimulationSpec | None = None
    prompt_cache: bool = Field(
        default=False,
        description="kind anthropic: add cache_control breakpoints to the system prompt and "
        "the conversation so far (cache writes cost more, reads far less)",
    )
    prompt_cache_min_tokens: int = Field(
        default=1024,
        ge=0,
        description="kind anthropic: the shortest prompt the model caches (Anthropic: 1024 "
        "tokens for most Claude models, 2048 or 4096 for some); the router's cost estimate "
        "prices cache writes from this length on",
    )
    enabled: bool = True


class ReliabilitySpec(_Spec):
    """A policy's failover limits (README, Reliability); unset fields use the process defaults.

    A timeout set here and on a deployment: the tighter one wins.
    """

    connect_timeout_s: float | None = Field(default=None, gt=0)
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    total_timeout_s: float | None = Field(default=None, gt=0, description="one attempt")
    request_timeout_s: float | None = Field(
        default=None, gt=0, description="the whole request: every attempt, retry and backoff"
    )
    max_retries: int | None = Field(default=None, ge=0, le=10, description="per deployment")
    retry_backoff_s: float | None = Field(default=None, ge=0)


Difficulty = Literal["easy", "medium", "hard"]


class PolicySpec(_Spec):
    """A named routing behaviour. Lambdas are quality points per USD and per second.

    ``quality_floor: heuristic`` takes the floor from ``routing.quality_floor_rules`` (per task
    category and difficulty). ``best_effort`` serves the best deployment that meets the hard
    requirements (capabilities, context window, health) when the floor or a ceiling excludes
    every one, instead of answering ``no_feasible_deployment``.
    """

    description: str = ""
    lambda_cost: float = Field(default=0.0, ge=0)
    lambda_latency: float = Field(default=0.0, ge=0)
    quality_floor: float | Literal["heuristic"] | None = None
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)
    best_effort: bool = False
    models: list[str] | None = Field(default=None, description="restrict to these models")
    reliability: ReliabilitySpec | None = None
    cascade: CascadeSpec | None = Field(default=None, description="cheap tier first, escalate")
    max_fallbacks: int = Field(default=3, ge=0, le=20, description="plan entries after the first")
    prompt_cache: bool | None = Field(
        default=None,
        description="Anthropic deployments: add cache_control breakpoints to the system prompt "
        "and the conversation so far (true), never (false), or as each deployment's "
        "prompt_cache says (unset)",
    )
    learned_router: str | None = Field(
        default=None,
        description="a `pareto train` router file (path relative to this config file); its "
        "predicted quality per model is the policy's q (the policy's models must all be "
        "models the file predicts)",
    )
    budget_pressure: BudgetPressureSpec | None = Field(
        default=None, description="raise lambda_cost as the caller's key nears its budget"
    )


class FloorRuleSpec(_Spec):
    """One heuristic floor rule: the first rule whose conditions all hold gives the floor.

    A condition left out matches anything. ``min_input_tokens`` matches long prompts.
    """

    category: list[str] | None = None
    difficulty: list[Difficulty] | None = None
    min_input_tokens: int | None = Field(default=None, ge=0)
    floor: float = Field(ge=0, le=100)

    @field_validator("category")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r}; use one of {', '.join(CATEGORIES)}")
        return value


class LiveSpec(_Spec):
    """How live per-deployment telemetry is blended with the catalog's static figures."""

    ewma_alpha: float = Field(default=0.2, gt=0, le=1, description="weight of a new observation")
    prior_weight: float = Field(
        default=5.0, ge=0, description="observations the catalog figure is worth"
    )
    queue_capacity: float = Field(
        default=32.0, gt=0, description="in-flight requests that double a deployment's TTFT"
    )


class RoutingSpec(_Spec):
    """Content-heuristic settings: floor rules and expected-output priors per category."""

    quality_floor_rules: list[FloorRuleSpec] = Field(default_factory=list)
    output_tokens_prior: dict[str, int] = Field(default_factory=dict)
    live: LiveSpec = Field(default_factory=LiveSpec)

    @field_validator("output_tokens_prior")
    @classmethod
    def _known_categories(cls, value: dict[str, int]) -> dict[str, int]:
        for name, n in value.items():
            if name not in CATEGORIES:
                raise ValueError(f"unknown category {name!r}; use one of {', '.join(CATEGORIES)}")
            if n <= 0:
                raise ValueError(f"output_tokens_prior for {name!r} must be positive, got {n}")
        return value


class ConfigSpec(_Spec):
    """One config file. ``include`` pulls in more files (relative paths), merged by key."""

    snapshot_date: str | None = None
    include: list[str] = Field(default_factory=list)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    deployments: dict[str, DeploymentSpec] = Field(default_factory=dict)
    policies: dict[str, PolicySpec] = Field(default_factory=dict)
    routing: RoutingSpec | None = None
    default_policy: str | None = None
    auth: AuthSpec | None = Field(
        default=None, description="gateway keys; auth is on unless auth.enabled is false"
    )
