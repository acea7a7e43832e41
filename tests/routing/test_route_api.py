"""Routing through the HTTP app: policies, overrides, explain, headers, clear errors."""

from __future__ import annotations

from typing import Any

from tests.conftest import sim_deployment, small_config

HELLO = [{"role": "user", "content": "hi, how are you?"}]


def tiered_config(**extra: Any) -> dict[str, Any]:
    """Cheap text-only tier, a mid tier, and a strong long-context vision tier."""
    config = small_config()
    config["models"] = {
        "tiny": {"quality": 25, "context_window": 16000, "capabilities": ["json"]},
        "mid": {"quality": 45, "context_window": 131072, "capabilities": ["json", "tools"]},
        "strong": {
            "quality": 62,
            "quality_by_category": {"math": 65, "code": 66},
            "context_window": 400000,
            "capabilities": ["tools", "vision", "json"],
        },
    }
    config["deployments"] = {
        "tiny@a": sim_deployment(price_in=0.05, price_out=0.08, ttft_s=0.2, decode_tps=500),
        "mid@a": sim_deployment(price_in=0.15, price_out=0.6, ttft_s=0.3, decode_tps=500),
        "mid@b": sim_deployment(price_in=0.35, price_out=0.75, ttft_s=0.3, decode_tps=3000),
        "strong@a": sim_deployment(price_in=5, price_out=25, ttft_s=2.0, decode_tps=70),
    }
    config.update(extra)
    return config


async def test_route_explains_without_calling_a_model(app_client) -> None:
    client = await app_client(tiered_config())
    r = await client.post("/v1/route", json={"model": "auto", "messages": HELLO})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["features"]["category"] == "chat"
    assert body["features"]["difficulty"] == "easy"
    assert body["policy"]["name"] == "auto"
    assert body["policy"]["quality_floor_source"].startswith("heuristic")
    rows = {row["deployment"]: row for row in body["candidates"]}
    assert set(rows) == {"tiny@a", "mid@a", "mid@b", "strong@a"}
    assert {"quality", "est_cost_usd", "est_latency_s", "utility", "status", "model"} <= set(
        rows["mid@a"]
    )
    statuses = [row["status"] for row in body["candidates"]]
    assert statuses.count("chosen") == 1
    assert body["plan"][0]["deployment"] != "strong@a"  # chit-chat goes to a cheap tier


async def test_policy_header_and_body_override(app_client) -> None:
    client = await app_client(tiered_config())
    r = await client.post(
        "/v1/route",
        json={"model": "auto", "messages": HELLO},
        headers={"x-pareto-policy": "best"},
    )
    assert r.json()["policy"]["name"] == "best"
    assert r.json()["plan"][0]["deployment"] == "strong@a"
    r = await client.post(
        "/v1/route",
        json={"model": "auto", "messages": HELLO, "pareto": {"quality_floor": 60}},
    )
    body = r.json()
    assert body["policy"]["quality_floor"] == 60
    assert body["policy"]["quality_floor_source"] == "override"
    assert body["plan"][0]["deployment"] == "strong@a"
    excluded = {row["deployment"]: row["status"] for row in body["candidates"]}
    assert excluded["tiny@a"] == "excluded:quality_floor"


async def test_bad_override_values_are_clear_400s(app_client) -> None:
    client = await app_client(tiered_config())
    cases = [
        ({"x-pareto-quality-floor": "high"}, None, "x-pareto-quality-floor"),
        ({"x-pareto-quality-floor": "120"}, None, "between 0 and 100"),
        ({"x-pareto-max-cost-usd": "-1"}, None, "x-pareto-max-cost-usd"),
        ({"x-pareto-lambda-cost": "nan"}, None, "x-pareto-lambda-cost"),
        ({"x-pareto-policy": "fastest"}, None, "unknown policy 'fastest'"),
        ({}, {"max_latency_ms": "soon"}, "pareto.max_latency_ms"),
        ({}, {"qualityfloor": 3}, "pareto.qualityfloor"),
    ]
    for headers, extra, needle in cases:
        body: dict[str, Any] = {"model": "auto", "messages": HELLO}
        if extra is not None:
            body["pareto"] = extra
        for path in ("/v1/route", "/v1/chat/completions"):
            r = await client.post(path, json=body, headers=headers)
            assert r.status_code == 400, (path, headers, extra, r.text)
            err = r.json()["error"]
            assert needle in err["message"], err
            assert err["type"] == "invalid_request_error"


async def test_no_feasible_deployment_names_the_constraints(app_client) -> None:
    client = await app_client(tiered_config())
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": HELLO, "pareto": {"quality_floor": 70}},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "no_feasible_deployment"
    assert "quality floor 70" in err["message"]
    assert "strong@a (q 62)" in err["message"]
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "cheap",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                }
            ],
            "pareto": {"max_cost_usd": 0.0000001},
        },
    )
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "no 'vision' capability excluded tiny@a, mid@a, mid@b" in message
    assert "max cost" in message and "strong@a" in message


async def test_best_effort_policy_serves_anyway(app_client) -> None:
    config = tiered_config(
        policies={
            "lenient": {"lambda_cost": 100, "quality_floor": 99, "best_effort": True},
        }
    )
    client = await app_client(config)
    r = await client.post("/v1/chat/completions", json={"model": "lenient", "messages": HELLO})
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-reason"].startswith("best_effort")


async def test_proxied_response_carries_routing_headers(app_client) -> None:
    client = await app_client(tiered_config())
    r = await client.post("/v1/chat/completions", json={"model": "auto", "messages": HELLO})
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-policy"] == "auto"
    assert r.headers["x-pareto-reason"].startswith("best_utility")
    assert float(r.headers["x-pareto-est-cost-usd"]) > 0
    assert r.headers["x-pareto-deployment"] != "strong@a"


async def test_floor_rules_hot_reload_and_invalid_rules_are_refused(
    app_client, write_config
) -> None:
    def own_rules(rules: list[dict[str, Any]]) -> dict[str, Any]:
        # A config with its own policies and rules (not including config/policies.yaml).
        auto = {"lambda_cost": 10000, "lambda_latency": 1, "quality_floor": "heuristic"}
        return tiered_config(
            include=[], policies={"auto": auto}, routing={"quality_floor_rules": rules}
        )

    rules = [{"category": ["chat"], "floor": 60}, {"floor": 20}]
    client = await app_client(own_rules(rules), admin_key="k")
    admin = {"authorization": "Bearer k"}
    r = await client.post("/v1/route", json={"model": "auto", "messages": HELLO})
    assert r.json()["policy"]["quality_floor"] == 60
    assert r.json()["plan"][0]["deployment"] == "strong@a"
    write_config(own_rules([{"floor": 10}]))
    assert (await client.post("/admin/reload", headers=admin)).status_code == 200
    r = await client.post("/v1/route", json={"model": "auto", "messages": HELLO})
    assert r.json()["policy"]["quality_floor"] == 10
    bad = [{"category": ["poetry"], "floor": 30}, {"difficulty": ["brutal"], "floor": 101}]
    write_config(own_rules(bad))
    r = await client.post("/admin/reload", headers=admin)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "routing.quality_floor_rules.0.category" in message and "poetry" in message
    assert "routing.quality_floor_rules.1.floor" in message
    r = await client.post("/v1/route", json={"model": "auto", "messages": HELLO})
    assert r.json()["policy"]["quality_floor"] == 10  # the old rules still apply
