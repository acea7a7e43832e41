"""The worked example of the routing issue, on the shipped catalogs (static figures)."""

from __future__ import annotations

import pytest

from app.catalog import load_catalog
from app.routing import Router
from tests.conftest import ROOT

EXPECTED = {  # deployment: (est. cost USD, est. latency s) for 800 in / 250 out
    "claude-opus-4.8@anthropic": (0.01025, 5.93),
    "gpt-5.5@openai": (0.01150, 5.65),
    "gemini-3.1-pro@google": (0.00460, 2.66),
    "gpt-oss-120b@cerebras": (0.00047, 0.38),
    "gpt-oss-120b@groq": (0.00027, 0.80),
    "llama-3.3-70b@groq": (0.00067, 1.30),
    "llama-3.1-8b@groq": (0.00006, 0.65),
}


@pytest.mark.parametrize("config", ["demo.yaml", "catalog.yaml"])
def test_worked_example_estimates_and_dominance(config: str) -> None:
    keys = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY")
    env = {k: "test-key" for k in (*keys, "CEREBRAS_API_KEY")}
    catalog = load_catalog(ROOT / "config" / config, env=env)
    router = Router(catalog)
    body = {
        "model": "balanced",
        "messages": [{"role": "user", "content": "Tell me about the history of Rome."}],
        "max_tokens": 250,
    }
    plan = router.route(catalog, body, {}, explain=True, input_tokens=800)
    rows = {c.deployment: c for c in plan.candidates}
    for dep, (cost, latency) in EXPECTED.items():
        assert rows[dep].est_cost_usd == pytest.approx(cost, abs=5e-6), dep
        assert rows[dep].est_latency_s == pytest.approx(latency, abs=0.005), dep
    llama = rows["llama-3.3-70b@groq"]
    assert llama.status == "dominated"
    assert "gpt-oss-120b@groq" in (llama.detail or "")
    # balanced (floor 40): llama-3.1-8b is below the floor, and the chosen one is on the frontier
    assert rows["llama-3.1-8b@groq"].status == "excluded:quality_floor"
    assert (
        plan.primary.deployment.id in rows and rows[plan.primary.deployment.id].status == "chosen"
    )
