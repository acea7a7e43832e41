"""Routing through a real gateway process in front of a real ``pareto simulate`` upstream.

A tiered catalog (cheap text-only, mid, cheap long-context, strong vision/long-context) under
``model: "auto"``: chit-chat goes to a cheap tier, a hard proof or a large refactoring goes to
the strong tier, images only to vision deployments, a 150k-token prompt only to long-context
ones; the official openai SDK passes overrides through ``extra_body``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import POLICIES
from tests.support.procs import Proc, gateway, simulator

pytestmark = pytest.mark.e2e

CHEAP = {"tiny@simhttp", "mid@simhttp", "mid@simhttp2"}
STRONG = {"strong@simhttp"}
VISION = {"strong@simhttp", "mini-vision@simhttp"}
LONG = {"strong@simhttp", "longctx@simhttp"}


def deployment(sim_url: str, price_in: float, price_out: float, ttft: float, tps: float) -> dict:
    return {
        "kind": "openai_compat",
        "base_url": sim_url,
        "api_key_env": "SIM_KEY",
        "price": {"input": price_in, "output": price_out},
        "ttft_s": ttft,
        "decode_tps": tps,
    }


def tiered_config(sim_url: str) -> dict[str, Any]:
    return {
        "include": [str(POLICIES)],
        "auth": {"enabled": False},
        "default_policy": "auto",
        "models": {
            "tiny": {"quality": 24, "context_window": 16000, "capabilities": ["json"]},
            "mid": {"quality": 45, "context_window": 131072, "capabilities": ["json", "tools"]},
            "mini-vision": {
                "quality": 47,
                "context_window": 131072,
                "capabilities": ["json", "vision"],
            },
            "longctx": {"quality": 30, "context_window": 1000000, "capabilities": ["json"]},
            "strong": {
                "quality": 61,
                "quality_by_category": {"code": 66, "math": 62},
                "context_window": 400000,
                "capabilities": ["tools", "vision", "json"],
            },
        },
        "deployments": {
            "tiny@simhttp": deployment(sim_url, 0.05, 0.08, 0.2, 560),
            "mid@simhttp": deployment(sim_url, 0.15, 0.6, 0.3, 500),
            "mid@simhttp2": deployment(sim_url, 0.35, 0.75, 0.3, 3000),
            "mini-vision@simhttp": deployment(sim_url, 0.75, 4.5, 0.8, 120),
            "longctx@simhttp": deployment(sim_url, 0.1, 0.4, 0.35, 300),
            "strong@simhttp": deployment(sim_url, 5, 25, 2.2, 67),
        },
    }


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("routing-e2e")
    with simulator(tmp, "--instant", "--output-tokens", "8") as sim:
        path: Path = tmp / "tiered.yaml"
        path.write_text(yaml.safe_dump(tiered_config(sim.url)))
        with gateway(path, tmp, env={"SIM_KEY": "sim-test-key-0000"}) as gw:
            yield gw


def chat(proc: Proc, content: Any, **extra: Any) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}
    r = httpx.post(f"{proc.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r


def explain(proc: Proc, content: Any) -> dict[str, Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    r = httpx.post(f"{proc.url}/v1/route", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return {row["deployment"]: row for row in r.json()["candidates"]}


def test_chit_chat_goes_to_a_cheap_tier(routed: Proc) -> None:
    r = chat(routed, "hey there, how's it going?")
    assert r.headers["x-pareto-deployment"] in CHEAP
    assert r.headers["x-pareto-policy"] == "auto"
    assert r.headers["x-pareto-reason"].startswith("best_utility")
    assert float(r.headers["x-pareto-est-cost-usd"]) < 0.001


def test_hard_proof_goes_to_the_strong_tier(routed: Proc) -> None:
    proof = (
        "Prove rigorously that there are infinitely many primes congruent to 3 mod 4. "
        "First state the lemma you need, then prove it step by step, and finally derive the "
        "theorem by contradiction."
    )
    r = chat(routed, proof)
    assert r.headers["x-pareto-deployment"] in STRONG, r.headers["x-pareto-reason"]
    rows = explain(routed, proof)
    assert rows["tiny@simhttp"]["status"] == "excluded:quality_floor"


def test_large_refactoring_goes_to_the_strong_tier(routed: Proc) -> None:
    module = "\n".join(
        f"def handler_{i}(request, db):\n    row = db.get(request.id)\n    return row.value + {i}"
        for i in range(60)
    )
    ask = (
        "Refactor this module into a class hierarchy with dependency injection; keep the "
        f"behaviour identical and add type hints.\n```python\n{module}\n```"
    )
    r = chat(routed, ask)
    assert r.headers["x-pareto-deployment"] in STRONG, r.headers["x-pareto-reason"]


def test_images_only_go_to_vision_deployments(routed: Proc) -> None:
    content = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    r = chat(routed, content)
    assert r.headers["x-pareto-deployment"] in VISION
    rows = explain(routed, content)
    for dep in ("tiny@simhttp", "mid@simhttp", "mid@simhttp2", "longctx@simhttp"):
        assert rows[dep]["status"] == "excluded:no_vision"


def test_150k_token_prompt_only_goes_to_long_context_deployments(routed: Proc) -> None:
    document = "The quarterly report lists revenue by region and product line. " * 9500
    content = document + "\nSummarize the report above in five bullet points."
    r = chat(routed, content)
    assert r.headers["x-pareto-deployment"] in LONG
    rows = explain(routed, content)
    for dep in ("tiny@simhttp", "mid@simhttp", "mid@simhttp2", "mini-vision@simhttp"):
        assert rows[dep]["status"] == "excluded:context_window"


def test_sdk_extra_body_overrides_and_clear_errors(routed: Proc) -> None:
    with openai.OpenAI(base_url=f"{routed.url}/v1", api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "hello!"}],
            extra_body={"pareto": {"quality_floor": 60}},
        )
        assert raw.headers["x-pareto-deployment"] in STRONG
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "hello!"}],
                extra_headers={"x-pareto-quality-floor": "99"},
            )
        assert err.value.code == "no_feasible_deployment"
        assert "quality floor 99" in err.value.message
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "hello!"}],
                extra_headers={"x-pareto-max-latency-ms": "fast"},
            )
        assert "x-pareto-max-latency-ms" in err.value.message
