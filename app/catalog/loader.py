"""Load a config file (and its includes), validate it, and compile a :class:`Catalog`.

Every problem is reported as ``file: dotted.path: reason`` so a person can fix the file;
:class:`ConfigError` carries the whole list. The server refuses to start on one, and a reload
that fails keeps the old catalog.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError

from app.auth.config import AuthSpec, compile_auth
from app.catalog.cascade import compile_cascade
from app.catalog.model import (
    DEFAULT_OUTPUT_PRIORS,
    Catalog,
    Deployment,
    FloorRule,
    Model,
    Policy,
    RoutingConfig,
)
from app.catalog.spec import ConfigSpec, DeploymentSpec, ModelSpec, PriceSpec, RoutingSpec
from app.errors import RouterFileError
from app.routing.learned import LearnedScorer

log = structlog.get_logger("pareto.catalog")

_PER_TOKEN = 1e-6
# Anthropic bills prompt-cache writes above the base input price: 1.25x for the 5-minute
# cache, 2x for the 1-hour cache (reads are ``cached_input``, 0.1x in its price list). Used
# when a ``kind: anthropic`` deployment's price leaves ``cache_write``/``cache_write_1h`` out.
ANTHROPIC_CACHE_WRITE = 1.25
ANTHROPIC_CACHE_WRITE_1H = 2.0


def cache_write_prices(kind: str, price: PriceSpec) -> tuple[float, float]:
    """USD per million tokens written to the 5-minute and the 1-hour prompt cache."""
    anthropic = kind == "anthropic"
    write = price.cache_write
    if write is None:
        write = price.input * ANTHROPIC_CACHE_WRITE if anthropic else price.input
    write_1h = price.cache_write_1h
    if write_1h is None:
        write_1h = price.input * ANTHROPIC_CACHE_WRITE_1H if anthropic else write
    return write, write_1h


class ConfigError(Exception):
    """A config that cannot be used. ``problems`` lists every ``file: path: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n  " + "\n  ".join(problems))
        self.problems = problems


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{path}: cannot read file: {exc.strerror or exc}")
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problems.append(f"{path}: not valid YAML: {exc}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: top level must be a mapping, got {type(data).__name__}")
        return None
    return data


def _validate(path: Path, data: dict[str, Any], problems: list[str]) -> ConfigSpec | None:
    try:
        return ConfigSpec.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{path}: {loc}: {err['msg']}")
        return None


def _collect(path: Path, problems: list[str], seen: set[Path]) -> list[tuple[Path, ConfigSpec]]:
    """The file and its includes, depth first; each file validated on its own."""
    path = path.resolve()
    if path in seen:
        problems.append(f"{path}: include cycle")
        return []
    seen.add(path)
    data = _read_yaml(path, problems)
    if data is None:
        return []
    spec = _validate(path, data, problems)
    if spec is None:
        return []
    out = [(path, spec)]
    for inc in spec.include:
        out.extend(_collect(path.parent / inc, problems, seen))
    return out


def load_catalog(path: str | Path, env: Mapping[str, str] | None = None) -> Catalog:
    """Load, validate and compile; raise :class:`ConfigError` listing every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    files = _collect(Path(path), problems, set())
    if problems:
        raise ConfigError(problems)

    models: dict[str, tuple[Path, ModelSpec]] = {}
    deployments: dict[str, tuple[Path, DeploymentSpec]] = {}
    policies: dict[str, tuple[Path, Any]] = {}
    snapshot: str | None = None
    default_policy: str | None = None
    auth: tuple[Path, AuthSpec] | None = None
    routing: tuple[Path, RoutingSpec] | None = None
    for file, spec in files:
        snapshot = snapshot or spec.snapshot_date
        if spec.routing is not None:
            if routing is not None:
                problems.append(f"{file}: routing: defined twice (also in {routing[0]})")
            routing = (file, spec.routing)
        if spec.auth is not None:
            if auth is not None:
                problems.append(f"{file}: auth: defined twice (also in {auth[0]})")
            auth = (file, spec.auth)
        default_policy = default_policy or spec.default_policy
        for kind, target, source in (
            ("models", models, spec.models),
            ("deployments", deployments, spec.deployments),
            ("policies", policies, spec.policies),
        ):
            for name, item in source.items():
                if name in target:
                    problems.append(
                        f"{file}: {kind}.{name}: defined twice (also in {target[name][0]})"
                    )
                target[name] = (file, item)  # type: ignore[assignment]

    compiled_models = {
        name: Model(
            name=name,
            quality=m.quality,
            quality_by_category=dict(m.quality_by_category),
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            capabilities=frozenset(m.capabilities),
        )
        for name, (_, m) in models.items()
    }
    policy_names = set(policies)
    for name in policy_names & set(compiled_models):
        problems.append(f"{policies[name][0]}: policies.{name}: name clashes with a model")

    compiled: list[Deployment] = []
    disabled: dict[str, str] = {}
    for dep_id, (file, d) in deployments.items():
        where = f"{file}: deployments.{dep_id}"
        if "@" not in dep_id:
            problems.append(f"{where}: id must be 'model@provider'")
            continue
        model_part, provider = dep_id.split("@", 1)
        model_name = d.model or model_part
        model = compiled_models.get(model_name)
        if model is None:
            problems.append(f"{where}: model {model_name!r} is not defined under models")
            continue
        if d.kind in ("openai_compat", "anthropic") and not d.base_url:
            problems.append(f"{where}: base_url is required for kind {d.kind}")
            continue
        if d.prompt_cache and d.kind != "anthropic":
            problems.append(
                f"{where}: prompt_cache applies to kind anthropic only (OpenAI-compatible "
                "providers cache prompt prefixes without being asked)"
            )
            continue
        if d.base_url and not d.base_url.startswith(("http://", "https://")):
            problems.append(f"{where}: base_url must start with http:// or https://")
            continue
        api_key: str | None = None
        if d.api_key_env:
            api_key = env.get(d.api_key_env) or None
            if api_key is None:
                disabled[dep_id] = f"environment variable {d.api_key_env} is not set"
                continue
        if not d.enabled:
            disabled[dep_id] = "enabled: false in config"
            continue
        price = d.price
        cache_write, cache_write_1h = cache_write_prices(d.kind, price)
        compiled.append(
            Deployment(
                id=dep_id,
                model=model,
                provider=provider,
                kind=d.kind,
                base_url=d.base_url.rstrip("/") if d.base_url else None,
                upstream_model=d.upstream_model or model_name,
                headers=dict(d.headers),
                price_input=price.input * _PER_TOKEN,
                price_cached_input=(
                    price.cached_input if price.cached_input is not None else price.input
                )
                * _PER_TOKEN,
                price_output=price.output * _PER_TOKEN,
                price_cache_write=cache_write * _PER_TOKEN,
                price_cache_write_1h=cache_write_1h * _PER_TOKEN,
                batch_discount=price.batch_discount,
                ttft_s=d.ttft_s,
                decode_tps=d.decode_tps,
                context_window=d.context_window or model.context_window,
                capabilities=(
                    frozenset(d.capabilities) if d.capabilities is not None else model.capabilities
                ),
                connect_timeout_s=d.connect_timeout_s,
                first_token_timeout_s=d.first_token_timeout_s,
                total_timeout_s=d.total_timeout_s,
                simulation=d.simulation,
                api_key_env=d.api_key_env,
                api_key=api_key,
                prompt_cache=d.prompt_cache,
                prompt_cache_min_tokens=d.prompt_cache_min_tokens,
            )
        )

    compiled_policies: dict[str, Policy] = {}
    is_cascade = {n: spec.cascade is not None for n, (_, spec) in policies.items()}
    for name, (file, p) in policies.items():
        for m in p.models or []:
            if m not in compiled_models:
                problems.append(f"{file}: policies.{name}.models: unknown model {m!r}")
        cascade = None
        if p.cascade is not None:
            where = f"{file}: policies.{name}.cascade"
            cascade, why = compile_cascade(where, p.cascade, compiled_models, is_cascade, problems)
            if cascade is None:
                if why:
                    disabled[f"policy {name}"] = why
                continue
        learned = None
        if p.learned_router is not None:
            learned = _load_learned(
                file, name, p.learned_router, p.models, compiled_models, problems
            )
        compiled_policies[name] = Policy(
            name=name,
            description=p.description,
            lambda_cost=p.lambda_cost,
            lambda_latency=p.lambda_latency,
            quality_floor=p.quality_floor,
            max_cost_usd=p.max_cost_usd,
            max_latency_ms=p.max_latency_ms,
            best_effort=p.best_effort,
            models=frozenset(p.models) if p.models else None,
            reliability=p.reliability,
            cascade=cascade,
            max_fallbacks=p.max_fallbacks,
            prompt_cache=p.prompt_cache,
            learned=learned,
            budget_pressure=p.budget_pressure,
        )
    if auth is not None:
        _check_auth(auth[0], auth[1], compiled_models, compiled_policies, problems)
    if routing is None or not routing[1].quality_floor_rules:
        for name, (file, p) in policies.items():
            if p.quality_floor == "heuristic":
                problems.append(
                    f"{file}: policies.{name}.quality_floor: 'heuristic' needs "
                    "routing.quality_floor_rules (see config/policies.yaml)"
                )
    if default_policy and default_policy not in compiled_policies:
        problems.append(f"{files[0][0]}: default_policy: unknown policy {default_policy!r}")
    if not compiled_models:
        problems.append(f"{files[0][0]}: models: at least one model is required")
    if problems:
        raise ConfigError(problems)

    by_model: dict[str, list[Deployment]] = {}
    for dep in compiled:
        by_model.setdefault(dep.model.name, []).append(dep)
    return Catalog(
        source=str(Path(path)),
        snapshot_date=snapshot,
        models=compiled_models,
        deployments=tuple(compiled),
        by_model={k: tuple(v) for k, v in by_model.items()},
        by_id={d.id: d for d in compiled},
        policies=compiled_policies,
        default_policy=default_policy,
        disabled=disabled,
        auth=compile_auth(auth[1] if auth else None),
        routing=_compile_routing(routing[1] if routing else None),
        cascades=frozenset(n for n, p in compiled_policies.items() if p.cascade is not None),
    )


def _compile_routing(spec: RoutingSpec | None) -> RoutingConfig:
    if spec is None:
        return RoutingConfig()
    return RoutingConfig(
        floor_rules=tuple(
            FloorRule(
                floor=r.floor,
                categories=frozenset(r.category) if r.category is not None else None,
                difficulties=frozenset(r.difficulty) if r.difficulty is not None else None,
                min_input_tokens=r.min_input_tokens,
            )
            for r in spec.quality_floor_rules
        ),
        output_tokens_prior={**DEFAULT_OUTPUT_PRIORS, **spec.output_tokens_prior},
        ewma_alpha=spec.live.ewma_alpha,
        prior_weight=spec.live.prior_weight,
        queue_capacity=spec.live.queue_capacity,
    )


def _check_auth(
    file: Path,
    spec: AuthSpec,
    models: Mapping[str, Model],
    policies: Mapping[str, Policy],
    problems: list[str],
) -> None:
    """Keys may only name models and policies that exist, and each hash is used once."""
    seen: dict[str, str] = {}
    for name, key in spec.keys.items():
        where = f"{file}: auth.keys.{name}"
        for m in key.models or []:
            if m not in models:
                problems.append(f"{where}.models: unknown model {m!r}")
        for p in key.policies or []:
            if p not in policies:
                problems.append(f"{where}.policies: unknown policy {p!r}")
        if key.hash in seen:
            problems.append(f"{where}.hash: same key hash as auth.keys.{seen[key.hash]}")
        seen[key.hash] = name


def log_disabled(catalog: Catalog) -> None:
    """One clear log line per deployment that is configured but disabled."""
    for name, reason in sorted(catalog.disabled.items()):
        if name.startswith("policy "):
            log.warning("policy_disabled", policy=name.removeprefix("policy "), reason=reason)
        else:
            log.warning("deployment_disabled", deployment=name, reason=reason)


def _load_learned(
    file: Path,
    policy: str,
    router_path: str,
    models: list[str] | None,
    compiled_models: Mapping[str, Any],
    problems: list[str],
) -> LearnedScorer | None:
    """Load a policy's learned router; its predictions must cover every model it routes to
    (learned and catalog qualities are on different scales, so they are never mixed)."""
    where = f"{file}: policies.{policy}.learned_router"
    path = Path(router_path)
    if not path.is_absolute():
        path = file.parent / path
    try:
        scorer = LearnedScorer.load(path)
    except RouterFileError as exc:
        problems.append(f"{where}: {exc}")
        return None
    routed = set(models) if models else set(compiled_models)
    missing = sorted(routed - set(scorer.models))
    if missing:
        problems.append(
            f"{where}: {path.name} predicts {', '.join(scorer.models)} but the policy also "
            f"routes to {', '.join(missing)}; list only predicted models under "
            f"policies.{policy}.models"
        )
        return None
    return scorer
