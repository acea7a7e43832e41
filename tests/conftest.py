"""Shared fixtures: configs written to tmp dirs, an in-process app, Redis helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "config" / "policies.yaml"


def sim_deployment(
    ttft_s: float = 0.01,
    decode_tps: float = 5000,
    price_in: float = 1.0,
    price_out: float = 2.0,
    realtime: bool = False,
    **simulation: Any,
) -> dict[str, Any]:
    return {
        "kind": "simulated",
        "price": {"input": price_in, "output": price_out, "cached_input": price_in / 10},
        "ttft_s": ttft_s,
        "decode_tps": decode_tps,
        "simulation": {"realtime": realtime, "output_tokens": 16, **simulation},
    }


def small_config(**deployments: dict[str, Any]) -> dict[str, Any]:
    """A two-model config on instant simulated deployments; override deployments by id."""
    config: dict[str, Any] = {
        "snapshot_date": "2026-07-01",
        "include": [str(POLICIES)],
        # Most tests are not about auth; tests/auth/ switch it on with real keys.
        "auth": {"enabled": False},
        "models": {
            "small": {"quality": 30, "context_window": 32000, "capabilities": ["json"]},
            "big": {
                "quality": 60,
                "context_window": 200000,
                "capabilities": ["tools", "vision", "json", "logprobs"],
            },
        },
        "deployments": {
            "small@sim": sim_deployment(price_in=0.1, price_out=0.2),
            "small@sim2": sim_deployment(price_in=0.2, price_out=0.4),
            "big@sim": sim_deployment(price_in=3, price_out=15),
        },
    }
    config["deployments"].update(deployments)
    return config


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(config: dict[str, Any], name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture
async def app_client(
    write_config: Callable[[dict[str, Any]], Path],
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: an httpx client bound to an in-process app built from a config dict."""
    clients: list[tuple[httpx.AsyncClient, Any]] = []

    async def make(config: dict[str, Any] | None = None, **settings: Any) -> httpx.AsyncClient:
        path = write_config(config or small_config())
        # In-process tests use the httpx backend so respx can mock upstreams; the e2e suite
        # (real servers) runs the production default, the http1 backend.
        settings.setdefault("http_client", "httpx")
        # Tests that assert what Redis holds must not flake when a loaded CI box makes one
        # Redis call exceed the 250 ms production default; outage tests set their own.
        settings.setdefault("redis_timeout_s", 1.0)
        app = create_app(Settings(config=path, watch_config=False, **settings))
        ctx = app.router.lifespan_context(app)
        await ctx.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        )
        clients.append((client, ctx))
        return client

    yield make
    for client, ctx in clients:
        await client.aclose()
        await ctx.__aexit__(None, None, None)


@pytest.fixture
def redis_prefix() -> str:
    """A unique key prefix so tests sharing one Redis never touch each other's keys."""
    return f"pareto-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def prefixed_redis(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """redis-py on the test Redis (127.0.0.1:6379), to look at what the code under test
    wrote; every key under the test's ``redis_prefix`` is deleted afterwards."""
    redis = aioredis.Redis.from_url(
        "redis://127.0.0.1:6379/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    yield redis
    keys = [k async for k in redis.scan_iter(match=redis_prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
