"""The cost estimate prices Anthropic prompt-cache writes the way the provider bills them.

When the gateway marks a prompt for an Anthropic deployment's cache (the policy's or the
deployment's ``prompt_cache``), its breakpoints end at the last message, so every input token
not read from the cache is written to it, at the cache-write price (1.25x input). The router's
estimate — the utility it ranks by, the plan's ``est_cost_usd`` and the budget hold taken from
it — must say the same as the bill for those token counts (``Deployment.static_cost_usd``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.catalog import load_catalog
from app.catalog.model import Catalog
from app.gateway import RequestContext
from app.routing import Router, Sticky
from app.routing.plan import RoutePlan
from app.telemetry.record import Record

# Per million tokens. m@anthropic is cheaper on plain input than m@openai, dearer when it
# writes the prompt to its cache (3.75 > 3.3), far cheaper when it reads it (0.3).
ANTHROPIC = {"input": 3, "cached_input": 0.3, "cache_write": 3.75, "output": 15}
OPENAI = {"input": 3.3, "cached_input": 3.3, "output": 15}
LONG = "Clause {n}: the supplier shall deliver the goods in good order and on time. "
SYSTEM = {"role": "system", "content": "".join(LONG.format(n=n) for n in range(120))}


def config(deployment_cache: bool = False, min_tokens: int = 1024) -> dict[str, Any]:
    anthropic = {
        "kind": "anthropic",
        "base_url": "https://anthropic.test",
        "price": ANTHROPIC,
        "ttft_s": 0.5,
        "decode_tps": 100,
        "prompt_cache": deployment_cache,
        "prompt_cache_min_tokens": min_tokens,
    }
    openai = {
        "kind": "openai_compat",
        "base_url": "https://openai.test/v1",
        "price": OPENAI,
        "ttft_s": 0.5,
        "decode_tps": 100,
    }
    cost_only = {"lambda_cost": 100000, "lambda_latency": 0, "models": ["m"]}
    return {
        "snapshot_date": "2026-07-01",
        "auth": {"enabled": False},
        "models": {"m": {"quality": 50, "context_window": 200000}},
        "deployments": {"m@anthropic": anthropic, "m@openai": openai},
        "policies": {
            "cached": {**cost_only, "prompt_cache": True},
            "uncached": {**cost_only, "prompt_cache": False},
            "as-deployed": cost_only,
        },
    }


def router_for(tmp_path: Path, **options: Any) -> tuple[Router, Catalog]:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(config(**options)))
    catalog = load_catalog(path, env={})
    return Router(catalog), catalog


def route(
    router: Router, catalog: Catalog, policy: str, messages: list[dict[str, str]], **kw: Any
) -> RoutePlan:
    body = {"model": policy, "messages": messages, "max_tokens": 200}
    return router.route(catalog, body, {}, explain=True, **kw)


def estimate(plan: RoutePlan, deployment: str) -> float:
    (row,) = [c for c in plan.candidates if c.deployment == deployment]
    return row.est_cost_usd


def first_turn() -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": "Summarise the contract."}]


def test_a_cached_prompt_is_estimated_at_the_cache_write_price(tmp_path) -> None:
    router, catalog = router_for(tmp_path)
    dep = catalog.by_id["m@anthropic"]
    cached = route(router, catalog, "cached", first_turn())
    assert cached.features is not None
    n_in, n_out = cached.features.input_tokens, cached.features.output_tokens
    assert n_in >= 1024  # long enough for Anthropic to cache it
    # What Anthropic bills when it reports the whole prompt written to the cache.
    billed = dep.static_cost_usd(n_in, n_out, n_cache_write=n_in)
    assert estimate(cached, "m@anthropic") == pytest.approx(billed, rel=1e-12)
    assert billed > dep.static_cost_usd(n_in, n_out)
    # Written at 3.75 it costs more than m@openai's 3.3: the plan takes m@openai...
    assert cached.entries[0].deployment.id == "m@openai"
    assert cached.entries[0].est_cost_usd == pytest.approx(estimate(cached, "m@openai"))
    # ...which it did not while nothing was written (3 < 3.3).
    uncached = route(router, catalog, "uncached", first_turn())
    assert estimate(uncached, "m@anthropic") == pytest.approx(dep.static_cost_usd(n_in, n_out))
    assert uncached.entries[0].deployment.id == "m@anthropic"


def test_a_sticky_turn_reads_the_prefix_and_writes_the_rest(tmp_path) -> None:
    router, catalog = router_for(tmp_path)
    dep = catalog.by_id["m@anthropic"]
    messages = [
        *first_turn(),
        {"role": "assistant", "content": "It covers delivery terms. " * 40},
        {"role": "user", "content": "And the penalties?"},
    ]
    prefix = 1500
    plan = route(router, catalog, "cached", messages, sticky=Sticky("m@anthropic", prefix))
    assert plan.features is not None
    n_in, n_out = plan.features.input_tokens, plan.features.output_tokens
    billed = dep.static_cost_usd(n_in, n_out, n_cached=prefix, n_cache_write=n_in - prefix)
    assert estimate(plan, "m@anthropic") == pytest.approx(billed, rel=1e-12)
    assert plan.entries[0].deployment.id == "m@anthropic"  # the warm cache keeps it
    assert plan.sticky is not None and plan.sticky.kept
    # The warm prefix is worth what it saves against being written again (3.75 - 0.3).
    saved = prefix * (dep.price_cache_write - dep.price_cached_input)
    assert plan.sticky.cache_value == pytest.approx(100000 * saved, rel=1e-12)


def test_no_write_is_estimated_below_the_minimum_or_without_caching(tmp_path) -> None:
    short = [{"role": "user", "content": "Summarise the contract in one line."}]
    router, catalog = router_for(tmp_path, min_tokens=1024)
    dep = catalog.by_id["m@anthropic"]
    plan = route(router, catalog, "cached", short)
    assert plan.features is not None and plan.features.input_tokens < 1024
    plain = dep.static_cost_usd(plan.features.input_tokens, plan.features.output_tokens)
    assert estimate(plan, "m@anthropic") == pytest.approx(plain, rel=1e-12)
    # A model that caches from 4096 tokens only: the long prompt is not written either.
    router, catalog = router_for(tmp_path, min_tokens=4096)
    plan = route(router, catalog, "cached", first_turn())
    assert plan.features is not None and plan.features.input_tokens < 4096
    n_in, n_out = plan.features.input_tokens, plan.features.output_tokens
    assert estimate(plan, "m@anthropic") == pytest.approx(dep.static_cost_usd(n_in, n_out))


@pytest.mark.parametrize(
    ("deployment_cache", "policy", "writes"),
    [
        (True, "as-deployed", True),  # unset: the deployment's own setting
        (False, "as-deployed", False),
        (True, "uncached", False),  # the policy's setting wins, as in the walk
        (False, "cached", True),
    ],
)
def test_the_estimate_follows_the_setting_the_walk_uses(
    tmp_path, deployment_cache: bool, policy: str, writes: bool
) -> None:
    router, catalog = router_for(tmp_path, deployment_cache=deployment_cache)
    dep = catalog.by_id["m@anthropic"]
    plan = route(router, catalog, policy, first_turn())
    assert plan.features is not None and plan.resolved is not None
    n_in, n_out = plan.features.input_tokens, plan.features.output_tokens
    expected = dep.static_cost_usd(n_in, n_out, n_cache_write=n_in if writes else 0)
    assert estimate(plan, "m@anthropic") == pytest.approx(expected, rel=1e-12)
    # The walk asks the provider the same question (app/providers/anthropic.py).
    assert dep.caches_prompt(plan.resolved.prompt_cache) is writes
    # A cascade tier's walk applies no policy setting: its estimate does not either.
    tier = route(router, catalog, policy, first_turn(), policy_prompt_cache=False)
    own = dep.static_cost_usd(n_in, n_out, n_cache_write=n_in if deployment_cache else 0)
    assert estimate(tier, "m@anthropic") == pytest.approx(own, rel=1e-12)


def test_the_plan_entry_and_the_hold_carry_the_write(tmp_path) -> None:
    router, catalog = router_for(tmp_path)
    body = {"model": "cached", "messages": first_turn(), "max_tokens": 200}
    # Not explained, no ceilings: the fast path prices only the planned entries.
    plan = router.route(catalog, body, {})
    assert plan.features is not None
    n_in, n_out = plan.features.input_tokens, plan.features.output_tokens
    by_id = {e.deployment.id: e.est_cost_usd for e in plan.entries}
    dep = catalog.by_id["m@anthropic"]
    assert by_id["m@anthropic"] == pytest.approx(
        dep.static_cost_usd(n_in, n_out, n_cache_write=n_in), rel=1e-12
    )


async def test_the_gateway_plans_like_its_walks_call(app_client) -> None:
    """A request's plan uses its policy's setting; a cascade tier's plan does not (its walk
    leaves caching to each deployment), through the gateway's own planning calls."""
    client = await app_client({**config(deployment_cache=False), "default_policy": "cached"})
    gateway = client._transport.app.state.gateway  # type: ignore[attr-defined]
    catalog = gateway.catalog
    dep = catalog.by_id["m@anthropic"]
    body = {"model": "m", "messages": first_turn(), "max_tokens": 200}
    ctx = RequestContext(request_id="r", headers={}, started=0.0, record=Record(request_id="r"))

    def anthropic(plan: RoutePlan) -> tuple[float, float, float]:
        """(estimated, billed if written, billed if not) for m@anthropic in ``plan``."""
        assert plan.features is not None
        (entry,) = [e for e in plan.entries if e.deployment.id == "m@anthropic"]
        n_in, n_out = plan.features.input_tokens, plan.features.output_tokens
        written = dep.static_cost_usd(n_in, n_out, n_cache_write=n_in)
        return entry.est_cost_usd, written, dep.static_cost_usd(n_in, n_out)

    request = gateway.plan(catalog, body, ctx)  # pinned model, default policy "cached"
    assert request.resolved is not None and request.resolved.prompt_cache is True
    estimated, written, _ = anthropic(request)
    assert estimated == pytest.approx(written, rel=1e-12)
    estimated, _, plain = anthropic(gateway.plan_tier(catalog, body, ctx))
    assert estimated == pytest.approx(plain, rel=1e-12)
