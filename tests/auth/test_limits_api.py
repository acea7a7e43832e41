"""Rate limits and budgets through the HTTP surface (in-process app, per-process counters)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from app.auth.config import generate_key, hash_key
from app.auth.ledger import Periods
from tests.conftest import sim_deployment, small_config
from tests.support.procs import free_port

MSG = [{"role": "user", "content": "Say hello"}]
KEY = generate_key()
NOON = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC).timestamp()
# small@sim: 7 prompt tokens at $0.1/M + 16 output tokens at $0.2/M = $0.0000039 a request.
REQUEST_USD = 7 * 0.1e-6 + 16 * 0.2e-6


def keyed_config(deployments: dict[str, Any] | None = None, **key: Any) -> dict[str, Any]:
    config = small_config(**(deployments or {}))
    for dep in config["deployments"].values():
        dep["simulation"]["prefix_cache"] = False  # actual cost == estimate, exactly
    config["auth"] = {"keys": {"team": {"hash": hash_key(KEY), **key}}}
    return config


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def keyed_client(app_client, config, **settings):
    client = await app_client(config, **settings)
    clock = Clock(NOON)
    app = client._transport.app
    app.state.guard.clock = clock
    return client, clock, app


async def chat(client, stream: bool = False, **extra: Any):
    return await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": MSG, "max_tokens": 16, "stream": stream, **extra},
        headers={"authorization": f"Bearer {KEY}"},
    )


async def test_over_the_request_rate_is_429_with_retry_after(app_client) -> None:
    client, clock, _ = await keyed_client(
        app_client, keyed_config(rate_limit={"requests_per_minute": 2})
    )
    assert [(await chat(client)).status_code for _ in range(2)] == [200, 200]
    r = await chat(client)
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert "'team'" in err["message"] and "2 requests per minute" in err["message"]
    assert r.headers["retry-after"] == "30"
    clock.now += 30
    assert (await chat(client)).status_code == 200


async def test_over_the_token_rate_is_429_and_a_too_large_request_says_so(app_client) -> None:
    client, clock, _ = await keyed_client(
        app_client, keyed_config(rate_limit={"tokens_per_minute": 60})
    )
    # 7 prompt tokens admitted, then 7 + 16 actual tokens charged: 23 a request.
    assert [(await chat(client)).status_code for _ in range(3)] == [200, 200, 200]
    r = await chat(client)
    assert r.status_code == 429 and "60 tokens per minute" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "word " * 200}]},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "request_too_large_for_limit"
    assert "more than API key 'team' may send in a minute" in r.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_daily_budget_is_charged_with_actual_cost_then_402(app_client, stream) -> None:
    budget = 2.5 * REQUEST_USD  # the 3rd request starts under the limit and ends over it
    client, clock, app = await keyed_client(app_client, keyed_config(budget={"daily_usd": budget}))
    for _ in range(3):
        r = await chat(client, stream=stream)
        assert r.status_code == 200, r.text
        if stream:
            assert r.text.endswith("data: [DONE]\n\n")
    r = await chat(client, stream=stream)
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota"
    assert "daily budget of $0.00001 for API key 'team' is used up" in err["message"]
    assert "resets in 12 h 0 min" in err["message"]
    assert r.headers["retry-after"] == str(12 * 3600)
    day, month = await app.state.guard.ledger.spend("team", Periods.at(clock.now))
    assert day.held == 0 and day.spent == month.spent == pytest.approx(3 * REQUEST_USD * 1e9, abs=3)
    clock.now += 12 * 3600  # a new UTC day
    assert (await chat(client, stream=stream)).status_code == 200


async def test_monthly_budget_message_names_the_month(app_client) -> None:
    client, _, _ = await keyed_client(
        app_client, keyed_config(budget={"daily_usd": 1, "monthly_usd": REQUEST_USD / 2})
    )
    assert (await chat(client)).status_code == 200
    r = await chat(client)
    assert r.status_code == 402
    assert "monthly budget" in r.json()["error"]["message"]
    assert "on the 1st" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == str(8 * 86400 + 12 * 3600)  # to Dec 1st 00:00 UTC


async def test_failed_requests_release_their_hold_and_cost_nothing(app_client) -> None:
    failing = {
        "small@sim": sim_deployment(faults={"error_rate": 1.0}),
        "small@sim2": sim_deployment(faults={"error_rate": 1.0}),
    }
    client, clock, app = await keyed_client(
        app_client, keyed_config(failing, budget={"daily_usd": REQUEST_USD})
    )
    for _ in range(3):
        assert (await chat(client)).status_code == 503
    day, _ = await app.state.guard.ledger.spend("team", Periods.at(clock.now))
    assert (day.spent, day.held) == (0, 0)


async def test_limits_fail_closed_when_redis_is_unreachable(app_client) -> None:
    client, _, _ = await keyed_client(
        app_client,
        keyed_config(rate_limit={"requests_per_minute": 5}),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    r = await chat(client)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "limits_unavailable" and r.headers["retry-after"] == "1"


async def test_budget_pressure_turns_routing_cheaper_before_the_hard_stop(app_client) -> None:
    from app.auth.guard import limits_of
    from app.auth.ledger import to_nano

    config = keyed_config(budget={"daily_usd": 1.0})
    config["policies"] = {
        "careful": {
            "description": "quality first, until the key's budget runs low",
            "lambda_cost": 1000,
            "budget_pressure": {"start": 0.5, "max_factor": 1000},
        },
        "plain": {"description": "the same without the option", "lambda_cost": 1000},
    }
    client, clock, app = await keyed_client(app_client, config)

    async def served(policy: str) -> str:
        r = await chat(client, model=policy)
        assert r.status_code == 200, r.text
        return r.headers["x-pareto-model"]

    assert await served("careful") == "big"  # budget barely touched: quality wins
    key = app.state.gateway.catalog.auth.by_name["team"]
    # Earlier requests of this key spent $0.90 of its $1 budget today.
    await app.state.guard.ledger.settle(
        limits_of(key), 0, to_nano(0.9), 0, Periods.at(clock.now), clock.now
    )
    assert await served("careful") == "small"  # 90 % used: cost now weighs 800x more
    assert await served("plain") == "big"  # a policy without the option is unaffected


def test_pressure_rises_linearly_from_start_to_max_factor() -> None:
    from app.auth.config import BudgetPressureSpec
    from app.auth.pressure import pressure_factor

    spec = BudgetPressureSpec(start=0.5, max_factor=11)
    assert pressure_factor(spec, None) == 1.0 and pressure_factor(None, 0.99) == 1.0
    assert pressure_factor(spec, 0.4) == 1.0 and pressure_factor(spec, 0.5) == 1.0
    assert pressure_factor(spec, 0.75) == pytest.approx(6.0)
    assert pressure_factor(spec, 1.0) == 11 and pressure_factor(spec, 1.7) == 11
