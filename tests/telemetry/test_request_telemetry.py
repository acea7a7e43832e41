"""One record per request: its log line, its metrics and the response all tell the same story."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from app.errors import FALLBACK_REASONS
from app.telemetry.metrics import ESCALATION_REASONS, SWITCH_REASONS
from tests.conftest import sim_deployment, small_config
from tests.support.prom import Samples, has, parse, value

SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 40}
MSG = [SYSTEM, {"role": "user", "content": "Say hello"}]
# small@sim prices, USD per million tokens (tests/conftest.py small_config)
PRICE_IN, PRICE_CACHED, PRICE_OUT = 0.1, 0.01, 0.2


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def request_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == "request"]


def expected_cost(usage: dict[str, Any]) -> float:
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    fresh = usage["prompt_tokens"] - cached
    return (fresh * PRICE_IN + cached * PRICE_CACHED + usage["completion_tokens"] * PRICE_OUT) / 1e6


def assert_metrics_match(before: Samples, after: Samples, rec: dict[str, Any]) -> None:
    """The metric deltas of one request equal its record."""
    labels = {"model": rec["model"], "deployment": rec["deployment"]}

    def delta(name: str, **extra: str) -> float:
        return value(after, name, **labels, **extra) - value(before, name, **labels, **extra)

    assert delta("pareto_requests_total", status=str(rec["status"])) == 1
    assert delta("pareto_input_tokens_total") == rec["input_tokens"]
    assert delta("pareto_cached_input_tokens_total") == rec["cached_input_tokens"]
    assert delta("pareto_output_tokens_total") == rec["output_tokens"]
    assert delta("pareto_cost_usd_total") == pytest.approx(rec["cost_usd"], rel=1e-9)
    assert delta("pareto_request_duration_seconds_count") == 1
    assert delta("pareto_request_duration_seconds_sum") == pytest.approx(
        rec["total_latency_ms"] / 1000
    )
    mode = "stream" if rec["stream"] else "complete"
    overhead = value(after, "pareto_gateway_overhead_seconds_sum", mode=mode) - value(
        before, "pareto_gateway_overhead_seconds_sum", mode=mode
    )
    assert overhead == pytest.approx(rec["gateway_overhead_ms"] / 1000)


async def test_non_streaming_log_metrics_and_response_agree(app_client) -> None:
    client = await app_client()
    await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
    before = await scrape(client)
    with capture_logs() as logs:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": MSG},
            headers={"x-request-id": "req-nonstream-1"},
        )
    assert r.status_code == 200
    after = await scrape(client)
    (rec,) = request_lines(logs)
    usage = r.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # the system prompt was cached
    assert rec["request_id"] == "req-nonstream-1" == r.headers["x-request-id"]
    assert rec["model"] == r.headers["x-pareto-model"] == "small"
    assert rec["deployment"] == r.headers["x-pareto-deployment"] == "small@sim"
    assert rec["provider"] == "sim"
    assert rec["input_tokens"] == usage["prompt_tokens"]
    assert rec["cached_input_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
    assert rec["cache_hit"] is True
    assert rec["output_tokens"] == usage["completion_tokens"]
    assert rec["cost_usd"] == pytest.approx(expected_cost(usage), rel=1e-9)
    assert float(r.headers["x-pareto-cost-usd"]) == pytest.approx(rec["cost_usd"], abs=1e-8)
    assert rec["status"] == 200 and rec["attempts"] == 1 and rec["fallback_reason"] is None
    assert rec["routing_ms"] is not None and rec["routing_ms"] >= 0
    assert rec["gateway_overhead_ms"] == pytest.approx(
        rec["total_latency_ms"] - rec["upstream_ms"] - rec["client_wait_ms"]
    )
    assert rec["prompt"] is None  # prompt text is never logged by default
    assert "careful assistant" not in orjson.dumps(rec).decode()
    assert_metrics_match(before, after, rec)
    policy = rec["router_policy"] or "direct"
    assert value(after, "pareto_requests_total", policy=policy, status="200") == 2


async def test_streaming_log_metrics_and_usage_chunk_agree(app_client) -> None:
    client = await app_client()
    before = await scrape(client)
    with capture_logs() as logs:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "small",
                "messages": MSG,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    after = await scrape(client)
    events = [e.removeprefix("data: ") for e in r.text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    usage = orjson.loads(events[-2])["usage"]
    (rec,) = request_lines(logs)
    assert rec["stream"] is True and rec["status"] == 200
    assert rec["request_id"] == r.headers["x-request-id"]
    assert rec["model"] == "small" and rec["deployment"] == r.headers["x-pareto-deployment"]
    assert rec["input_tokens"] == usage["prompt_tokens"]
    assert rec["output_tokens"] == usage["completion_tokens"] == 16
    assert rec["cost_usd"] == pytest.approx(expected_cost(usage), rel=1e-9)
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] <= rec["total_latency_ms"]
    assert_metrics_match(before, after, rec)
    ttft = value(after, "pareto_ttft_seconds_count", deployment="small@sim") - value(
        before, "pareto_ttft_seconds_count", deployment="small@sim"
    )
    assert ttft == 1


async def test_failover_is_counted_by_reason_and_failed_deployment(app_client) -> None:
    config = small_config(
        **{"small@sim": sim_deployment(price_in=0.01, price_out=0.01, faults={"error_rate": 1.0})}
    )
    client = await app_client(config)
    before = await scrape(client)
    with capture_logs() as logs:
        r = await client.post(
            "/v1/chat/completions", json={"model": "small", "messages": MSG, "stream": True}
        )
        middle = await scrape(client)
        r2 = await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
    after = await scrape(client)
    recs = request_lines(logs)
    assert [rec["deployment"] for rec in recs] == ["small@sim2", "small@sim2"]
    assert r.headers["x-pareto-deployment"] == r2.headers["x-pareto-deployment"] == "small@sim2"
    for rec in recs:
        assert rec["fallback_reason"] == "upstream_5xx" and rec["attempts"] == 2
        assert [a["deployment"] for a in rec["attempt_log"]] == ["small@sim", "small@sim2"]
    assert_metrics_match(before, middle, recs[0])
    assert_metrics_match(middle, after, recs[1])
    assert (
        value(after, "pareto_fallbacks_total", reason="upstream_5xx")
        - value(before, "pareto_fallbacks_total", reason="upstream_5xx")
        == 2
    )
    assert (
        value(
            after, "pareto_upstream_failures_total", deployment="small@sim", reason="upstream_5xx"
        )
        == 2
    )
    assert value(after, "pareto_requests_total", deployment="small@sim") == 0


async def test_error_responses_have_a_record_and_count_as_errors(app_client) -> None:
    config = small_config(
        **{
            "small@sim": sim_deployment(faults={"error_rate": 1.0, "error_status": [500]}),
            "small@sim2": sim_deployment(faults={"error_rate": 1.0, "error_status": [502]}),
        }
    )
    client = await app_client(config)
    with capture_logs() as logs:
        r = await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
        r404 = await client.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
        r400 = await client.post("/v1/chat/completions", content=b"{not json")
    after = await scrape(client)
    assert (r.status_code, r404.status_code, r400.status_code) == (503, 404, 400)
    failed, missing, bad = request_lines(logs)
    assert failed["status"] == 503 and failed["user_visible_error"] == "all_deployments_failed"
    assert failed["attempts"] >= 2 and failed["request_id"] == r.headers["x-request-id"]
    assert len(failed["attempt_log"]) == failed["attempts"]
    assert missing["status"] == 404 and missing["user_visible_error"] == "model_not_found"
    assert missing["request_id"] == r404.headers["x-request-id"]
    assert bad["status"] == 400 and bad["request_id"] == r400.headers["x-request-id"]
    assert value(after, "pareto_requests_total", model="none", status="503") == 1
    assert value(after, "pareto_requests_total", model="none", status="404") == 1
    assert value(after, "pareto_requests_total", model="none", status="400") == 1
    # One count per failed attempt, each with its reason and failed deployment.
    assert value(after, "pareto_fallbacks_total", reason="upstream_5xx") == failed["attempts"]
    for dep in ("small@sim", "small@sim2"):
        tries = sum(1 for a in failed["attempt_log"] if a["deployment"] == dep)
        assert value(after, "pareto_upstream_failures_total", deployment=dep) == tries


async def test_request_id_is_on_every_log_line_of_the_request(app_client, monkeypatch) -> None:
    from app.providers.simulated import SimulatedProvider

    original = SimulatedProvider.complete

    async def chatty(self, call):
        structlog.get_logger("pareto.test").info("inside_provider")
        return await original(self, call)

    monkeypatch.setattr(SimulatedProvider, "complete", chatty)
    client = await app_client()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": MSG},
            headers={"x-request-id": "trace-42"},
        )
    assert r.status_code == 200
    events = {e["event"]: e for e in logs}
    assert events["inside_provider"]["request_id"] == "trace-42"
    assert events["request"]["request_id"] == "trace-42"
    # Not leaked into what the process logs after the request.
    assert structlog.contextvars.get_contextvars().get("request_id") is None


async def test_prompt_is_logged_only_with_the_debug_setting(app_client) -> None:
    client = await app_client(log_prompts=True)
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
    (rec,) = request_lines(logs)
    assert rec["prompt"] == MSG


async def test_upstream_wait_is_not_gateway_overhead(app_client) -> None:
    slow = sim_deployment(
        ttft_s=0.08, decode_tps=2000, price_in=0.01, price_out=0.01, realtime=True
    )
    client = await app_client(small_config(**{"small@sim": slow}))
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
        await client.post(
            "/v1/chat/completions", json={"model": "small", "messages": MSG, "stream": True}
        )
    for rec in request_lines(logs):
        assert rec["upstream_ms"] >= 80  # the simulated TTFT is a real sleep
        assert rec["total_latency_ms"] >= rec["upstream_ms"]
        assert rec["gateway_overhead_ms"] == pytest.approx(
            rec["total_latency_ms"] - rec["upstream_ms"] - rec["client_wait_ms"]
        )
        assert rec["gateway_overhead_ms"] < rec["total_latency_ms"] - 80


async def test_bounded_label_values_exist_before_the_first_event(app_client) -> None:
    client = await app_client()
    samples = await scrape(client)
    for reason in FALLBACK_REASONS:
        assert has(samples, "pareto_fallbacks_total", reason=reason)
    for reason in ESCALATION_REASONS:
        assert has(samples, "pareto_escalations_total", reason=reason)
    for reason in SWITCH_REASONS:
        assert has(samples, "pareto_session_switches_total", reason=reason)
    for dep in ("small@sim", "small@sim2", "big@sim"):
        assert value(samples, "pareto_breaker_state", deployment=dep) == 0
        assert has(samples, "pareto_ttft_seconds_bucket", deployment=dep)
    assert value(samples, "pareto_redis_degraded") == 0
    # Refusals (401 bad key, 403 a key refused a model): a rate sees the first one.
    for status in ("401", "403"):
        refused = {"model": "none", "deployment": "none", "policy": "none", "status": status}
        assert has(samples, "pareto_requests_total", **refused)
        assert value(samples, "pareto_requests_total", **refused) == 0
    # Never an id as a label.
    assert all("request_id" not in dict(labels) for _, labels in samples)


async def test_state_pushed_by_other_layers_shows_up(app_client) -> None:
    client = await app_client(spend_budget_usd_per_hour=5.0)
    metrics = client._transport.app.state.metrics  # type: ignore[attr-defined]
    metrics.breaker_changed("small@sim", "open")
    metrics.breaker_changed("big@sim", "half_open")
    metrics.redis_degraded(True)
    samples = await scrape(client)
    assert value(samples, "pareto_breaker_state", deployment="small@sim") == 2
    assert value(samples, "pareto_breaker_state", deployment="big@sim") == 1
    assert value(samples, "pareto_redis_degraded") == 1
    assert value(samples, "pareto_spend_budget_usd_per_hour") == 5.0


async def test_telemetry_off_emits_nothing(app_client) -> None:
    client = await app_client(telemetry=False)
    with capture_logs() as logs:
        r = await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
    assert r.status_code == 200
    assert request_lines(logs) == []
    assert value(await scrape(client), "pareto_requests_total") == 0


async def test_an_opened_circuit_breaker_shows_on_the_gauge(app_client) -> None:
    config = small_config(
        **{"small@sim": sim_deployment(price_in=0.01, price_out=0.01, faults={"error_rate": 1.0})}
    )
    client = await app_client(config, breaker_failures=2, max_retries=0)
    assert value(await scrape(client), "pareto_breaker_state", deployment="small@sim") == 0
    for _ in range(3):
        r = await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
        assert r.status_code == 200
    samples = await scrape(client)
    assert value(samples, "pareto_breaker_state", deployment="small@sim") == 2
    assert value(samples, "pareto_breaker_state", deployment="small@sim2") == 0
