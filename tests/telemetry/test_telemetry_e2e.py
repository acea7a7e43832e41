"""Telemetry of a real uvicorn gateway: client disconnects, and several workers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.conftest import sim_deployment, small_config
from tests.support.procs import Proc, gateway
from tests.support.prom import parse, value

pytestmark = pytest.mark.e2e
MSG = [{"role": "user", "content": "Tell me a long story"}]


def request_records(proc: Proc) -> list[dict[str, Any]]:
    out = []
    for line in proc.log_text().splitlines():
        if line.startswith("{"):
            event = orjson.loads(line)
            if event.get("event") == "request":
                out.append(event)
    return out


def wait_records(proc: Proc, n: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recs = request_records(proc)
        if len(recs) >= n:
            return recs
        time.sleep(0.05)
    raise AssertionError(f"expected {n} request log lines, got:\n{proc.log_text()[-3000:]}")


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_client_disconnect_mid_stream_is_recorded_and_counted(tmp_path: Path) -> None:
    slow = sim_deployment(
        ttft_s=0.02, decode_tps=25, price_in=0.01, price_out=0.01, realtime=True, output_tokens=200
    )
    config = write(tmp_path, small_config(**{"small@sim": slow, "small@sim2": slow}))
    with gateway(config, tmp_path) as gw:
        with (
            httpx.Client(base_url=gw.url, timeout=10) as client,
            client.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "small", "messages": MSG, "stream": True},
                headers={"x-request-id": "walks-away"},
            ) as r,
        ):
            seen = 0
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    seen += 1
                if seen >= 4:
                    break  # leave after a few tokens of a ~8 s answer
        (rec,) = wait_records(gw, 1)
        samples = parse(httpx.get(f"{gw.url}/metrics").text)
    assert rec["request_id"] == "walks-away"
    assert rec["client_disconnected"] is True and rec["status"] == 499
    assert rec["deployment"] in ("small@sim", "small@sim2") and rec["stream"] is True
    assert rec["usage_counted_by_gateway"] is True
    assert 1 <= rec["output_tokens"] < 200  # what was relayed, not the whole answer
    assert rec["total_latency_ms"] < 6000
    labels = {"model": "small", "deployment": rec["deployment"]}
    assert value(samples, "pareto_requests_total", status="499", **labels) == 1
    assert value(samples, "pareto_output_tokens_total", **labels) == rec["output_tokens"]
    assert value(samples, "pareto_input_tokens_total", **labels) == rec["input_tokens"]
    assert value(samples, "pareto_cost_usd_total", **labels) == pytest.approx(rec["cost_usd"])


def test_two_workers_metrics_merge_and_match_the_log(tmp_path: Path) -> None:
    config = write(tmp_path, small_config())
    n = 16
    with gateway(config, tmp_path, workers=2, env={"TMPDIR": str(tmp_path)}) as gw:
        (metrics_dir,) = tmp_path.glob("pareto-metrics-*")
        for i in range(n):
            # A fresh connection per request, so both workers serve some of them.
            r = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json={"model": "small" if i % 2 else "big", "messages": MSG, "stream": i % 3 == 0},
                headers={"connection": "close"},
                timeout=10,
            )
            assert r.status_code == 200
        recs = wait_records(gw, n)
        scrapes = [
            parse(httpx.get(f"{gw.url}/metrics", headers={"connection": "close"}).text)
            for _ in range(6)
        ]
        assert list(metrics_dir.glob("*.db"))
    assert not metrics_dir.exists()  # pareto serve removes its multiprocess directory
    out_tokens = sum(rec["output_tokens"] for rec in recs)
    cost = sum(rec["cost_usd"] for rec in recs)
    for samples in scrapes:  # whichever worker answered, it reports every worker's requests
        assert value(samples, "pareto_requests_total") == n
        assert value(samples, "pareto_requests_total", model="big") == n // 2
        assert value(samples, "pareto_output_tokens_total") == out_tokens
        assert value(samples, "pareto_cost_usd_total") == pytest.approx(cost)
        assert value(samples, "pareto_gateway_overhead_seconds_count") == n
        assert value(samples, "pareto_breaker_state", deployment="big@sim") == 0
