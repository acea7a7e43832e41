"""Metrics.observe: what each Record field becomes, including fields other layers fill."""

from __future__ import annotations

from app.telemetry.metrics import Metrics
from app.telemetry.record import Record
from tests.support.prom import parse, value


def scrape(metrics: Metrics) -> dict:
    body, _ = metrics.render()
    return parse(body.decode())


def test_cascade_session_and_routing_fields_feed_their_metrics() -> None:
    metrics = Metrics()
    rec = Record(
        request_id="r1",
        router_policy="cascade",
        model="big",
        deployment="big@sim",
        routing_ms=0.05,
        total_latency_ms=1200,
        ttft_ms=300,
        decode_tps=150,
        tiers=[
            {"deployment": "small@sim", "escalation_reason": "invalid_json"},
            {"deployment": "mid@sim", "escalation_reason": "judge_rejected"},
            {"deployment": "big@sim"},
        ],
        escalation_reason="invalid_json",
        session_sticky=False,
        session_switch_reason="better_utility",
    )
    rec.finish_timing(1.2)
    metrics.observe(rec)
    metrics.observe(Record(request_id="r2", session_sticky=True, escalation_reason="refusal"))
    metrics.observe(Record(request_id="r3", session_switch_reason="made-up"))
    s = scrape(metrics)
    assert value(s, "pareto_escalations_total", reason="invalid_json") == 1
    assert value(s, "pareto_escalations_total", reason="judge_rejected") == 1
    assert value(s, "pareto_escalations_total", reason="refusal") == 1
    assert value(s, "pareto_session_requests_total") == 2
    assert value(s, "pareto_session_sticky_hits_total") == 1
    assert value(s, "pareto_session_switches_total", reason="better_utility") == 1
    assert value(s, "pareto_session_switches_total", reason="other") == 1  # bounded
    assert value(s, "pareto_routing_decision_seconds_count", policy="cascade") == 1
    assert value(s, "pareto_ttft_seconds_sum", deployment="big@sim") == 0.3
    assert value(s, "pareto_decode_tokens_per_second_count", deployment="big@sim") == 1
    assert value(s, "pareto_requests_total", policy="cascade", model="big", status="200") == 1
    assert value(s, "pareto_requests_total", model="none", deployment="none") == 2


def test_unknown_fallback_reason_is_bounded_to_other() -> None:
    metrics = Metrics()
    rec = Record(
        request_id="r",
        attempt_log=[{"deployment": "a@x", "fallback_reason": "weird"}, {"deployment": "b@x"}],
    )
    metrics.observe(rec)
    s = scrape(metrics)
    assert value(s, "pareto_fallbacks_total", reason="other") == 1
    assert value(s, "pareto_upstream_failures_total", deployment="a@x", reason="other") == 1


def test_cascade_spend_is_split_between_the_tiers_that_spent_it() -> None:
    metrics = Metrics()
    rec = Record(
        request_id="r",
        router_policy="cascade",
        model="big",
        deployment="big@sim",
        cost_usd=0.5,
        tiers=[
            {
                "tier": 1,
                "deployment": "small@sim",
                "model": "small",
                "outcome": "escalated",
                "escalation_reason": "invalid_json",
                "cost_usd": 0.125,
            },
            {"tier": 2, "deployment": "big@sim", "model": "big", "outcome": "served"},
        ],
    )
    metrics.observe(rec)
    s = scrape(metrics)
    assert value(s, "pareto_cost_usd_total", deployment="small@sim") == 0.125
    assert value(s, "pareto_cost_usd_total", deployment="big@sim") == 0.375
    assert value(s, "pareto_cost_usd_total") == rec.cost_usd


def test_prompt_cache_reads_and_writes_are_counted_apart() -> None:
    metrics = Metrics()
    rec = Record(
        request_id="r",
        model="big",
        deployment="big@anthropic",
        input_tokens=7040,
        cached_input_tokens=2000,
        cache_write_input_tokens=5000,
        output_tokens=20,
    )
    metrics.observe(rec)
    s = scrape(metrics)
    labels = {"model": "big", "deployment": "big@anthropic"}
    assert value(s, "pareto_input_tokens_total", **labels) == 7040
    assert value(s, "pareto_cached_input_tokens_total", **labels) == 2000
    assert value(s, "pareto_cache_write_input_tokens_total", **labels) == 5000
