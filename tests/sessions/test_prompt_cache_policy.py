"""A policy option drives Anthropic prompt caching (cache_control breakpoints) per request."""

from __future__ import annotations

from typing import Any

import pytest
import respx

from tests.conftest import small_config
from tests.providers.test_anthropic import KEY, URL, anthropic_deployment, wire

CONVERSATION = [
    {"role": "system", "content": "You are a contracts lawyer."},
    {"role": "user", "content": "Read clause 4."},
    {"role": "assistant", "content": "Clause 4 limits liability."},
    {"role": "user", "content": "Is that enforceable?"},
]


def config(deployment_cache: bool) -> dict[str, Any]:
    fast_and_cheap = anthropic_deployment(
        prompt_cache=deployment_cache,
        price={"input": 0.5, "cached_input": 0.05, "output": 1},
        ttft_s=0.001,
        decode_tps=100000,
    )
    cfg = small_config(**{"big@anthropic": fast_and_cheap})
    base = {"lambda_cost": 1000, "lambda_latency": 1, "models": ["big"]}
    cfg["policies"] = {
        "cached": {**base, "prompt_cache": True},
        "uncached": {**base, "prompt_cache": False},
        "as-deployed": base,
    }
    return cfg


async def sent_body(app_client, deployment_cache: bool, model: str) -> bytes:
    client = await app_client(config(deployment_cache))
    async with respx.mock() as mock:
        route = mock.post(URL).respond(200, content=wire("message_text.json"))
        r = await client.post(
            "/v1/chat/completions", json={"model": model, "messages": CONVERSATION}
        )
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-deployment"] == "big@anthropic"
    return bytes(route.calls.last.request.content)


@pytest.mark.parametrize(
    ("deployment_cache", "model", "breakpoints"),
    [
        (False, "cached", True),  # the policy turns it on
        (True, "uncached", False),  # the policy turns it off
        (True, "as-deployed", True),  # unset: the deployment decides
        (False, "as-deployed", False),
    ],
)
async def test_policy_option_adds_or_removes_cache_breakpoints(
    app_client, monkeypatch, deployment_cache: bool, model: str, breakpoints: bool
) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", KEY)
    sent = await sent_body(app_client, deployment_cache, model)
    assert (b'"cache_control":{"type":"ephemeral"}' in sent) is breakpoints
