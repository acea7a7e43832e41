"""A gateway with a cascade policy on instant simulated deployments, and its emitted records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.gateway import Gateway
from app.main import create_app
from app.providers.simulated import SimulatedProvider
from app.settings import Settings
from app.telemetry.record import Record
from tests.conftest import POLICIES, sim_deployment

PRICES = {  # USD per million tokens: (input, output)
    "mini@a": (0.1, 0.4),
    "mini@b": (0.2, 0.8),
    "strong@sim": (5.0, 30.0),
    "judge@sim": (0.05, 0.08),
}


def cascade_config(**policy_overrides: Any) -> dict[str, Any]:
    """mini (two deployments, logprobs) → strong; a judge model; three cascade policies."""
    tiers = [{"model": "mini", "timeout_s": 0.3}, {"model": "strong"}]
    checks = {"structural": True, "refusal": True, "min_confidence": 0.5}
    deployments = {}
    for dep_id, (price_in, price_out) in PRICES.items():
        dep = sim_deployment(price_in=price_in, price_out=price_out)
        dep["price"]["cached_input"] = price_in  # keeps cost arithmetic in tests simple
        deployments[dep_id] = dep
    return {
        "include": [str(POLICIES)],
        "auth": {"enabled": False},
        "models": {
            "mini": {
                "quality": 40,
                "context_window": 32000,
                "capabilities": ["json", "tools", "logprobs"],
            },
            "strong": {"quality": 60, "context_window": 200000, "capabilities": ["json", "tools"]},
            "judge": {"quality": 20, "context_window": 8000, "capabilities": []},
        },
        "deployments": deployments,
        "policies": {
            "tiered": {"cascade": {"tiers": tiers, "checks": checks, **policy_overrides}},
            "judged": {
                "cascade": {
                    "tiers": tiers,
                    "checks": checks,
                    "judge": {"model": "judge", "min_score": 7, "on_error": "escalate"},
                }
            },
            "stream-last": {
                "cascade": {"tiers": tiers, "checks": checks, "streaming": "last_tier_only"}
            },
        },
    }


@dataclass
class Stack:
    """The client, the gateway behind it, and every record the gateway emitted."""

    client: httpx.AsyncClient
    gateway: Gateway
    records: list[Record]

    def requests_to(self, deployment_id: str) -> int:
        dep = self.gateway.catalog.by_id[deployment_id]
        provider = self.gateway.providers.for_deployment(dep)
        assert isinstance(provider, SimulatedProvider)
        return provider.requests_to(deployment_id)

    def cost_of(self, deployment_id: str, usage: dict[str, Any]) -> float:
        price_in, price_out = PRICES[deployment_id]
        return (usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out) / 1e6


@pytest.fixture
async def stack(
    write_config: Callable[[dict[str, Any]], Path],
) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[httpx.AsyncClient, Any]] = []

    async def make(config: dict[str, Any] | None = None) -> Stack:
        app = create_app(
            Settings(config=write_config(config or cascade_config()), watch_config=False)
        )
        ctx = app.router.lifespan_context(app)
        await ctx.__aenter__()
        gateway: Gateway = app.state.gateway
        records: list[Record] = []
        gateway._emit = records.append  # the test reads what telemetry would log
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        opened.append((client, ctx))
        return Stack(client, gateway, records)

    yield make
    for client, ctx in opened:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
