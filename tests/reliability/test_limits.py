"""Timeouts per policy and per deployment (the tighter wins), and the per-request deadline."""

from __future__ import annotations

import time

from app.catalog.spec import ReliabilitySpec
from app.reliability.limits import Defaults, attempt_limits, request_limits
from tests.conftest import sim_deployment, small_config
from tests.reliability.test_failover import entry


def test_tighter_of_policy_and_deployment_wins_else_defaults() -> None:
    from dataclasses import replace

    from app.catalog.model import Policy

    defaults = Defaults(first_token_timeout_s=30, total_timeout_s=600, connect_timeout_s=5)
    policy = Policy(
        "p",
        "",
        0,
        0,
        None,
        None,
        None,
        False,
        None,
        reliability=ReliabilitySpec(first_token_timeout_s=3, max_retries=0, request_timeout_s=20),
    )
    limits = request_limits(defaults, policy)
    assert (limits.max_retries, limits.request_timeout_s) == (0, 20)
    dep = entry("m@a").deployment
    assert attempt_limits(defaults, limits, dep).first_token_s == 3  # policy only
    slow = replace(dep, first_token_timeout_s=10, total_timeout_s=60)
    tight = replace(dep, first_token_timeout_s=1)
    assert attempt_limits(defaults, limits, slow).first_token_s == 3  # policy is tighter
    assert attempt_limits(defaults, limits, tight).first_token_s == 1  # deployment is tighter
    assert attempt_limits(defaults, limits, slow).total_s == 60  # deployment only
    assert attempt_limits(defaults, limits, dep).connect_s == 5  # neither: the default
    no_policy = request_limits(defaults, None)
    assert attempt_limits(defaults, no_policy, slow).first_token_s == 10


def policy_config() -> dict:
    config = small_config()
    config["policies"] = {
        "impatient": {
            "lambda_cost": 1000,
            "quality_floor": 10,
            "models": ["small"],
            "reliability": {"first_token_timeout_s": 0.15, "max_retries": 0},
        }
    }
    return config


async def test_policy_first_token_timeout_applies(app_client) -> None:
    # The process default is 30s; the policy says 0.15s.
    client = await app_client(policy_config(), first_token_timeout_s=30)
    body = {
        "model": "impatient",
        "messages": [{"role": "user", "content": "[sim:hang@small@sim]"}],
        "stream": True,
    }
    start = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    assert time.perf_counter() - start < 10  # far from the 30s default: the policy's 0.15s
    assert r.status_code == 200
    assert r.headers["x-pareto-fallback-reason"] == "timeout_first_token"
    assert r.headers["x-pareto-deployment"] != "small@sim"


async def test_request_deadline_bounds_the_whole_walk(app_client) -> None:
    # Every deployment hangs; each attempt could wait 5s, the request may take 0.4s in all.
    config = small_config(**{"small@sim3": sim_deployment(price_in=0.15, price_out=0.3)})
    client = await app_client(config, first_token_timeout_s=5, request_timeout_s=0.4)
    body = {"model": "small", "messages": [{"role": "user", "content": "[sim:hang]"}]}
    start = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    assert time.perf_counter() - start < 4  # one attempt's first-token timeout would be 5s
    assert r.status_code == 503
    assert r.headers["x-pareto-fallback-reason"] == "timeout_total"
    assert "small@sim: timeout_total" in r.json()["error"]["message"]
