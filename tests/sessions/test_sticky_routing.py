"""Stickiness inside routing: a warm cache keeps a conversation put, and it yields when it must.

The config has one model at two providers with opposite price shapes (``m@a``: cheaper
output, ``m@b``: cheaper input). A conversation whose turns alternate long and short
``max_tokens`` makes a per-turn router flip between them every turn; stickiness prices the
sticky deployment's cached prefix and keeps the conversation on one.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import sim_deployment, small_config

SYSTEM = {"role": "system", "content": "You review pull requests for a payments team. " * 30}


def flip_config(**overrides: Any) -> dict[str, Any]:
    config = small_config()
    config["models"]["m"] = {
        "quality": 50,
        "context_window": 100000,
        "capabilities": ["tools", "json"],
    }
    a = sim_deployment(price_in=3, price_out=10)
    a["price"]["cached_input"] = 0.3
    b = sim_deployment(price_in=2.5, price_out=15)
    b["price"]["cached_input"] = 0.25
    config["deployments"].update({"m@a": a, "m@b": b}, **overrides)
    return config


class Chat:
    """A client that resends its history; even turns ask for 400 output tokens, odd for 20.

    ``m@a`` is cheaper for a long answer, ``m@b`` for a short one.
    """

    def __init__(self, client: httpx.AsyncClient, session: str = "s-1") -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = [SYSTEM]
        self.headers = {"x-pareto-session-id": session}
        self.turn = 0

    async def say(self, model: str = "m", **extra: Any) -> httpx.Response:
        n_out = 400 if self.turn % 2 == 0 else 20
        self.messages.append(
            {
                "role": "user",
                "content": f"Review change {self.turn} [sim:tokens={n_out}]: " + "diff line " * 15,
            }
        )
        body = {"model": model, "messages": self.messages, "max_tokens": n_out, **extra}
        self.turn += 1
        r = await self.client.post("/v1/chat/completions", json=body, headers=self.headers)
        assert r.status_code == 200, r.text
        message = r.json()["choices"][0]["message"]
        self.messages.append({"role": "assistant", "content": message.get("content") or "ok"})
        return r


def usage_of(replies: list[httpx.Response]) -> tuple[int, int, float]:
    prompt = sum(r.json()["usage"]["prompt_tokens"] for r in replies)
    cached = sum(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] for r in replies)
    cost = sum(float(r.headers["x-pareto-cost-usd"]) for r in replies)
    return prompt, cached, cost


async def stored_sessions(prefix: str) -> int:
    """How many session keys live under ``prefix`` in the shared Redis (then removes them)."""
    redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    return len(keys)


async def ten_turns(client: httpx.AsyncClient) -> list[httpx.Response]:
    chat = Chat(client)
    return [await chat.say() for _ in range(10)]


@pytest.mark.redis
async def test_ten_turns_stay_on_one_deployment_with_a_warm_cache(
    app_client, redis_prefix: str
) -> None:
    redis = {"redis_url": "redis://127.0.0.1:6379/0", "session_key_prefix": redis_prefix}
    sticky = await ten_turns(await app_client(flip_config(), **redis))
    per_turn = await ten_turns(await app_client(flip_config(), sessions_enabled=False))

    assert len({r.headers["x-pareto-deployment"] for r in sticky}) == 1
    assert [r.headers["x-pareto-session"] for r in sticky] == ["new"] + ["sticky"] * 9
    prompt, cached, cost = usage_of(sticky)
    assert cached / prompt > 0.75

    # Without stickiness the router flips every turn and each deployment's cache is a turn
    # behind: a smaller cached share and a higher bill for the same conversation.
    assert await stored_sessions(redis_prefix) == 1
    flips = [r.headers["x-pareto-deployment"] for r in per_turn]
    assert sum(x != y for x, y in zip(flips, flips[1:], strict=False)) >= 8
    off_prompt, off_cached, off_cost = usage_of(per_turn)
    assert off_cached / off_prompt < cached / prompt - 0.15
    assert off_cost > cost * 1.1


async def test_yields_to_capability_the_sticky_deployment_lacks(app_client) -> None:
    config = flip_config()
    config["deployments"]["m@a"]["capabilities"] = ["json"]
    client = await app_client(config)
    chat = Chat(client)
    first = await chat.say()
    assert first.headers["x-pareto-deployment"] == "m@a"
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    second = await chat.say(tools=tools)
    assert second.headers["x-pareto-deployment"] == "m@b"
    assert second.headers["x-pareto-session"] == "switched:infeasible"
    third = await chat.say()  # the conversation now lives on m@b, which is warm
    assert third.headers["x-pareto-deployment"] == "m@b"
    assert third.headers["x-pareto-session"] == "sticky"


async def test_yields_when_the_sticky_deployments_breaker_opens(app_client) -> None:
    client = await app_client(flip_config(), breaker_failures=2, max_retries=0)
    chat = Chat(client)
    first = await chat.say()
    assert first.headers["x-pareto-deployment"] == "m@a"
    # Other conversations find m@a failing; the failover serves them and its breaker opens.
    for n in range(2):
        other = Chat(client, session=f"other-{n}")
        other.messages.append({"role": "user", "content": "[sim:error=503@m@a] hello"})
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": other.messages, "max_tokens": 400},
            headers=other.headers,
        )
        assert r.headers["x-pareto-deployment"] == "m@b"
        assert r.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    # Our conversation leaves its warm deployment without even trying it.
    second = await chat.say()
    assert second.headers["x-pareto-deployment"] == "m@b"
    assert second.headers["x-pareto-session"] == "switched:unhealthy"
    assert second.headers["x-pareto-attempts"] == "1"


async def test_failover_away_from_the_sticky_deployment_is_a_switch(app_client) -> None:
    client = await app_client(flip_config(), max_retries=0)
    chat = Chat(client)
    assert (await chat.say()).headers["x-pareto-deployment"] == "m@a"
    chat.messages.append({"role": "user", "content": "[sim:error=503@m@a] still there?"})
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": chat.messages, "max_tokens": 400},
        headers=chat.headers,
    )
    assert r.headers["x-pareto-deployment"] == "m@b"
    assert r.headers["x-pareto-session"] == "switched:unhealthy"


async def test_changing_policy_is_recorded_as_the_reason(app_client) -> None:
    client = await app_client(flip_config())
    chat = Chat(client)
    assert (await chat.say()).headers["x-pareto-deployment"] == "m@a"
    moved = await chat.say(model="small")
    assert moved.headers["x-pareto-session"] == "switched:policy_changed"
