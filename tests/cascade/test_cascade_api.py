"""Cascade policies through the HTTP API: escalation, failover inside a tier, cost, headers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.auth.config import generate_key, hash_key
from tests.cascade.conftest import cascade_config

URL = "/v1/chat/completions"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    }
]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}


def chat(text: str, model: str = "tiered", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_good_cheap_answer_is_served_without_calling_the_strong_tier(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("What is the capital of France?"))
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-tier"] == "1"
    assert r.headers["x-pareto-deployment"] == "mini@a"
    assert r.headers["x-pareto-policy"] == "tiered"
    assert "x-pareto-escalation-reason" not in r.headers
    assert "x-pareto-fallback-reason" not in r.headers
    assert s.requests_to("strong@sim") == 0
    body = r.json()
    # The gateway asked mini@a for logprobs (to judge confidence) but the client did not.
    assert body["choices"][0]["logprobs"] is None
    # Non-escalated: the request costs exactly the cheap tier's answer.
    cheap_cost = s.cost_of("mini@a", body["usage"])
    assert float(r.headers["x-pareto-cost-usd"]) == pytest.approx(cheap_cost, rel=1e-6)
    (rec,) = s.records
    assert rec.escalation_reason is None and rec.fallback_reason is None
    assert [t["outcome"] for t in rec.tiers] == ["accepted"]
    assert rec.tiers[0]["deployment"] == "mini@a"
    assert rec.tiers[0]["confidence"] > 0.9
    assert rec.cost_usd == pytest.approx(cheap_cost, rel=1e-9)


async def test_client_that_asked_for_logprobs_keeps_them(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hello", logprobs=True))
    assert r.headers["x-pareto-tier"] == "1"
    assert r.json()["choices"][0]["logprobs"]["content"]


ESCALATIONS = [
    ("low_confidence", chat("Prove it [sim:low_confidence@mini@a]")),
    ("refusal", chat("Do this [sim:refuse@mini@a]")),
    ("refusal", chat("Say something [sim:empty@mini@a]")),
    ("truncated", chat("Write an essay [sim:tokens=40@mini@a]", max_tokens=20)),
    (
        "invalid_json",
        chat("Give JSON [sim:invalid_json@mini@a]", response_format={"type": "json_object"}),
    ),
    (
        "schema_mismatch",
        chat("A person [sim:schema_mismatch@mini@a]", response_format=SCHEMA_FORMAT),
    ),
    ("invalid_json", chat("Weather? [sim:invalid_json@mini@a]", tools=TOOLS)),
    ("schema_mismatch", chat("Weather? [sim:schema_mismatch@mini@a]", tools=TOOLS)),
    ("tier_timeout", chat("Anything [sim:hang@mini@a]")),
    ("judge_rejected", chat("Explain tides [sim:grade=3@judge@sim]", model="judged")),
]


@pytest.mark.parametrize(("reason", "body"), ESCALATIONS, ids=[e[0] for e in ESCALATIONS])
async def test_each_weak_answer_escalates_with_its_reason(stack, reason, body) -> None:
    s = await stack()
    r = await s.client.post(URL, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-escalation-reason"] == reason
    assert r.headers["x-pareto-tier"] == "2"
    assert r.headers["x-pareto-deployment"] == "strong@sim"
    # An answer judged weak is an escalation, never a failover.
    assert "x-pareto-fallback-reason" not in r.headers
    assert s.requests_to("strong@sim") == 1
    assert s.requests_to("mini@b") == 0  # the cheap tier answered: no failover inside it
    (rec,) = s.records
    assert rec.escalation_reason == reason and rec.fallback_reason is None
    assert [t["outcome"] for t in rec.tiers] == ["escalated", "served"]
    assert rec.tiers[0]["escalation_reason"] == reason
    assert rec.cost_usd == pytest.approx(sum(t["cost_usd"] for t in rec.tiers), rel=1e-12)
    assert float(r.headers["x-pareto-cost-usd"]) == pytest.approx(rec.cost_usd, abs=1e-8)


async def test_escalated_cost_is_the_sum_of_both_tiers(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Think hard [sim:low_confidence@mini@a]"))
    usage = r.json()["usage"]  # same prompt, same 16-token answer length on both tiers
    expected = s.cost_of("mini@a", usage) + s.cost_of("strong@sim", usage)
    assert float(r.headers["x-pareto-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    (rec,) = s.records
    assert rec.tiers[0]["cost_usd"] == pytest.approx(s.cost_of("mini@a", usage), rel=1e-9)
    assert rec.tiers[1]["cost_usd"] == pytest.approx(s.cost_of("strong@sim", usage), rel=1e-9)
    assert rec.cost_usd == pytest.approx(expected, rel=1e-9)


async def test_failing_cheap_deployment_fails_over_inside_the_tier(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hello [sim:error=500@mini@a]"))
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-tier"] == "1"
    assert r.headers["x-pareto-deployment"] == "mini@b"
    assert r.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    assert "x-pareto-escalation-reason" not in r.headers
    assert s.requests_to("strong@sim") == 0
    (rec,) = s.records
    assert rec.fallback_reason == "upstream_5xx" and rec.escalation_reason is None


async def test_whole_cheap_tier_down_moves_on_without_an_escalation_reason(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hi [sim:error=503@mini@a] [sim:error=502@mini@b]"))
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-tier"] == "2"
    assert r.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    assert "x-pareto-escalation-reason" not in r.headers
    (rec,) = s.records
    assert [t["outcome"] for t in rec.tiers] == ["failed", "served"]
    assert rec.cost_usd == pytest.approx(rec.tiers[1]["cost_usd"])


async def test_judge_accepts_good_answer_and_its_cost_is_counted(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Explain tides [sim:grade=9@judge@sim]", model="judged"))
    assert r.headers["x-pareto-tier"] == "1"
    assert s.requests_to("judge@sim") == 1 and s.requests_to("strong@sim") == 0
    (rec,) = s.records
    judge_cost = rec.tiers[0]["judge_cost_usd"]
    answer_cost = s.cost_of("mini@a", r.json()["usage"])
    assert judge_cost > 0
    assert rec.cost_usd == pytest.approx(answer_cost + judge_cost, rel=1e-9)
    assert float(r.headers["x-pareto-cost-usd"]) == pytest.approx(rec.cost_usd, abs=1e-8)


async def test_tier_timeout_while_judging_keeps_the_billed_answer_cost(stack) -> None:
    s = await stack()  # the judge hangs; the mini tier's 0.3 s timeout fires mid-judging
    r = await s.client.post(URL, json=chat("Explain tides [sim:hang@judge@sim]", model="judged"))
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-escalation-reason"] == "tier_timeout"
    (rec,) = s.records
    assert s.requests_to("mini@a") == 1 and s.requests_to("judge@sim") == 1
    assert rec.tiers[0]["cost_usd"] > 0  # mini's answer was produced and billed
    assert rec.cost_usd == pytest.approx(rec.tiers[0]["cost_usd"] + rec.tiers[1]["cost_usd"])


async def test_judge_without_a_score_follows_on_error(stack) -> None:
    s = await stack()  # the "judged" policy escalates when the judge's reply holds no score
    r = await s.client.post(URL, json=chat("Explain tides", model="judged"))
    assert r.headers["x-pareto-escalation-reason"] == "judge_rejected"
    config = cascade_config()
    config["policies"]["judged"]["cascade"]["judge"]["on_error"] = "accept"
    s = await stack(config)
    r = await s.client.post(URL, json=chat("Explain tides", model="judged"))
    assert r.headers["x-pareto-tier"] == "1"


def sse(text: str) -> list[Any]:
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


def streamed_text(chunks: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_stream_good_cheap_answer_is_buffered_then_replayed(stack) -> None:
    s = await stack()
    plain = await s.client.post(URL, json=chat("Tell me a fact"))
    r = await s.client.post(
        URL,
        json=chat("Tell me a fact", stream=True, stream_options={"include_usage": True}),
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-pareto-tier"] == "1"
    chunks = sse(r.text)
    assert streamed_text(chunks) == plain.json()["choices"][0]["message"]["content"]
    assert all(c["choices"][0]["logprobs"] is None for c in chunks if c["choices"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert s.requests_to("strong@sim") == 0


async def test_stream_weak_cheap_answer_streams_the_strong_tier(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Do it [sim:refuse@mini@a]", stream=True))
    assert r.headers["x-pareto-tier"] == "2"
    assert r.headers["x-pareto-escalation-reason"] == "refusal"
    chunks = sse(r.text)
    assert "sorry" not in streamed_text(chunks).lower()
    assert all(c.get("usage") is None for c in chunks)  # usage not asked for: hidden
    (rec,) = s.records
    assert rec.stream and rec.deployment == "strong@sim"
    assert rec.cost_usd == pytest.approx(sum(t["cost_usd"] for t in rec.tiers), rel=1e-12)
    assert rec.tiers[1]["cost_usd"] > 0 and rec.tiers[0]["cost_usd"] > 0


async def test_stream_tool_call_from_cheap_tier_is_replayed_as_deltas(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Weather in Oslo?", tools=TOOLS, stream=True))
    assert r.headers["x-pareto-tier"] == "1"
    chunks = sse(r.text)
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    args = orjson.loads("".join(c["function"]["arguments"] for c in calls))
    assert calls[0]["function"]["name"] == "get_weather" and set(args) == {"city", "days"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_last_tier_only_skips_the_cheap_tier_for_streams(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hello", model="stream-last", stream=True))
    assert r.headers["x-pareto-tier"] == "2"
    assert "x-pareto-escalation-reason" not in r.headers
    assert streamed_text(sse(r.text))
    assert s.requests_to("mini@a") == 0
    # Non-streaming requests on the same policy still try the cheap tier first.
    r = await s.client.post(URL, json=chat("Hello", model="stream-last"))
    assert r.headers["x-pareto-tier"] == "1"


async def test_cascade_policies_are_listed_and_unknown_tiers_disable_them(stack) -> None:
    s = await stack()
    ids = {m["id"] for m in (await s.client.get("/v1/models")).json()["data"]}
    assert {"tiered", "judged", "stream-last"} <= ids
    # The shipped `cascade` policy names gpt-oss-120b, which this small catalog lacks.
    assert "cascade" not in ids
    assert "gpt-oss-120b" in s.gateway.catalog.disabled["policy cascade"]


STREAM_CASES = [
    e for e in ESCALATIONS if e[0] in ("low_confidence", "tier_timeout", "judge_rejected")
]
STREAM_CASES.append(("invalid_json", chat("Weather? [sim:invalid_json@mini@a]", tools=TOOLS)))


@pytest.mark.parametrize(("reason", "body"), STREAM_CASES, ids=[e[0] for e in STREAM_CASES])
async def test_stream_escalation_reasons(stack, reason, body) -> None:
    s = await stack()
    r = await s.client.post(URL, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-escalation-reason"] == reason
    assert r.headers["x-pareto-tier"] == "2" and "x-pareto-fallback-reason" not in r.headers
    chunks = sse(r.text)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "tool_calls")
    (rec,) = s.records
    assert rec.escalation_reason == reason and rec.fallback_reason is None
    assert rec.cost_usd == pytest.approx(sum(t["cost_usd"] for t in rec.tiers), rel=1e-12)


async def test_stream_failover_inside_the_cheap_tier(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hello [sim:error=500@mini@a]", stream=True))
    assert r.headers["x-pareto-tier"] == "1"
    assert r.headers["x-pareto-deployment"] == "mini@b"
    assert r.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    assert "x-pareto-escalation-reason" not in r.headers
    assert streamed_text(sse(r.text))
    assert s.requests_to("strong@sim") == 0


async def test_failover_and_escalation_in_one_request_keep_both_labels(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hm [sim:error=500@mini@a] [sim:low_confidence@mini@b]"))
    assert r.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    assert r.headers["x-pareto-escalation-reason"] == "low_confidence"
    assert r.headers["x-pareto-tier"] == "2"
    (rec,) = s.records
    assert rec.tiers[0]["deployment"] == "mini@b"
    assert [a["deployment"] for a in rec.attempt_log] == ["mini@a", "mini@b", "strong@sim"]


async def test_three_tiers_escalate_twice_and_pay_for_each(stack) -> None:
    config = cascade_config()
    config["policies"]["tiered"]["cascade"]["tiers"] = [
        {"model": "mini"},
        {"model": "judge"},
        {"model": "strong"},
    ]
    s = await stack(config)
    r = await s.client.post(
        URL, json=chat("Q [sim:refuse@mini@a] [sim:tokens=30@judge@sim]", max_tokens=20)
    )
    assert r.headers["x-pareto-tier"] == "3" and r.headers["x-pareto-tiers-tried"] == "3"
    assert r.headers["x-pareto-escalation-reason"] == "refusal"  # the first escalation
    (rec,) = s.records
    assert [(t["outcome"], t.get("escalation_reason")) for t in rec.tiers] == [
        ("escalated", "refusal"),
        ("escalated", "truncated"),
        ("served", None),
    ]
    assert all(t["cost_usd"] > 0 for t in rec.tiers)
    assert rec.cost_usd == pytest.approx(sum(t["cost_usd"] for t in rec.tiers), rel=1e-12)


async def test_a_tier_can_be_a_routed_sub_policy(stack) -> None:
    config = cascade_config()
    config["policies"]["tiered"]["cascade"]["tiers"] = [{"policy": "cheap"}, {"model": "strong"}]
    s = await stack(config)
    r = await s.client.post(URL, json=chat("Hello"))
    assert r.headers["x-pareto-tier"] == "1" and r.headers["x-pareto-tier-target"] == "cheap"
    assert r.headers["x-pareto-policy"] == "tiered"
    assert r.headers["x-pareto-model"] != "strong"


async def test_last_tier_failing_is_an_error_with_the_tiers_recorded(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Q [sim:refuse@mini@a] [sim:error=503@strong@sim]"))
    assert r.status_code == 503, r.text
    assert "strong@sim" in r.json()["error"]["message"]
    (rec,) = s.records
    assert [t["outcome"] for t in rec.tiers] == ["escalated", "failed"]
    assert rec.escalation_reason == "refusal" and rec.fallback_reason == "upstream_5xx"
    assert rec.cost_usd == pytest.approx(rec.tiers[0]["cost_usd"], rel=1e-12)


async def test_gateway_keys_limit_cascades_and_their_tiers(stack) -> None:
    full, mini_only = generate_key(), generate_key()
    config = cascade_config()
    config["auth"] = {
        "enabled": True,
        "keys": {
            "full": {"hash": hash_key(full)},
            "no-cascade": {"hash": hash_key(mini_only), "policies": ["cheap"], "models": ["mini"]},
        },
    }
    s = await stack(config)
    auth = {"authorization": f"Bearer {mini_only}"}
    r = await s.client.post(URL, json=chat("Hello"), headers=auth)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = await s.client.post(URL, json=chat("Hello"), headers={"authorization": f"Bearer {full}"})
    assert r.status_code == 200 and r.headers["x-pareto-tier"] == "1"


@pytest.mark.parametrize(
    ("headers", "extra"),
    [({"x-pareto-policy": "tiered"}, {}), ({}, {"pareto": {"policy": "tiered"}})],
    ids=["header", "body"],
)
async def test_policy_override_can_name_a_cascade(stack, headers, extra) -> None:
    s = await stack()
    body = chat("Q [sim:low_confidence@mini@a] [sim:low_confidence@mini@b]", model="auto", **extra)
    r = await s.client.post(URL, json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-policy"] == "tiered"
    assert r.headers["x-pareto-escalation-reason"] == "low_confidence"
    assert r.headers["x-pareto-deployment"] == "strong@sim"


async def test_client_quality_floor_skips_a_cheap_tier_below_it(stack) -> None:
    s = await stack()
    r = await s.client.post(URL, json=chat("Hello"), headers={"x-pareto-quality-floor": "50"})
    assert r.status_code == 200, r.text
    assert r.headers["x-pareto-tier"] == "2"
    assert "x-pareto-escalation-reason" not in r.headers
    assert s.requests_to("mini@a") == 0 and s.requests_to("mini@b") == 0
    (rec,) = s.records
    assert [t["outcome"] for t in rec.tiers] == ["skipped", "served"]


async def test_client_overrides_do_not_reach_the_judge(stack) -> None:
    s = await stack()  # a floor of 35 admits the mini tier (40) but not the judge model (20)
    r = await s.client.post(
        URL,
        json=chat("Explain [sim:grade=2@judge@sim]", model="judged"),
        headers={"x-pareto-quality-floor": "35"},
    )
    assert r.headers["x-pareto-escalation-reason"] == "judge_rejected"
    assert s.requests_to("judge@sim") == 1


async def test_route_dry_run_explains_each_tier(stack) -> None:
    s = await stack()
    r = await s.client.post("/v1/route", json=chat("Hello"))
    assert r.status_code == 200, r.text
    cascade = r.json()["cascade"]
    assert cascade["policy"] == "tiered" and cascade["checks"]["min_confidence"] == 0.5
    tiers = cascade["tiers"]
    assert [(t["tier"], t["target"], t["timeout_s"]) for t in tiers] == [
        (1, "mini", 0.3),
        (2, "strong", None),
    ]
    assert tiers[0]["plan"][0]["deployment"].startswith("mini@")
    assert tiers[1]["plan"][0]["deployment"] == "strong@sim"
    assert s.requests_to("mini@a") == 0  # a dry run calls no model
