"""A client that drops a request (streaming or not) leaves no open upstream request behind."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import POLICIES
from tests.support.procs import gateway, simulator

pytestmark = pytest.mark.e2e


def sim_stats(sim_url: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(sim_url.removesuffix("/v1") + "/stats").json()
    return stats


def wait_idle(sim_url: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Poll until the simulator serves nothing (bounded: a leak fails, not hangs)."""
    deadline = time.monotonic() + timeout_s
    stats = sim_stats(sim_url)
    while stats["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = sim_stats(sim_url)
    return stats


def slow_config(sim_url: str) -> dict[str, object]:
    return {
        "include": [str(POLICIES)],
        "auth": {"enabled": False},
        "models": {"m": {"quality": 40, "context_window": 32000}},
        "deployments": {
            "m@slow": {
                "kind": "openai_compat",
                "base_url": sim_url,
                "price": {"input": 1, "output": 1},
                "ttft_s": 0.1,
                "decode_tps": 10,
            }
        },
    }


def test_dropped_stream_cancels_the_upstream_request(tmp_path: Path) -> None:
    # 200 tokens at 10 tokens/s: the upstream would stream for 20s if nobody stopped it.
    with simulator(tmp_path, "--tps", "10", "--output-tokens", "200") as sim:
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(slow_config(sim.url)))
        with gateway(path, tmp_path) as gw, httpx.Client(base_url=gw.url, timeout=10) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                while "content" not in next(lines):
                    pass  # read until the first token has reached us
                assert sim_stats(sim.url)["active"] == 1
            # The response is closed mid-stream: the client is gone.
            stats = wait_idle(sim.url)
            assert stats == {"active": 0, "disconnects": 1}


def test_dropped_json_request_cancels_the_upstream_request(tmp_path: Path) -> None:
    # The answer would take 20 s; the client gives up after 0.5 s.
    with simulator(tmp_path, "--tps", "10", "--output-tokens", "200") as sim:
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(slow_config(sim.url)))
        with gateway(path, tmp_path, env={"PARETO_LOG_LEVEL": "info"}) as gw:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=0.5)
            stats = wait_idle(sim.url)
            assert stats == {"active": 0, "disconnects": 1}
            deadline = time.monotonic() + 5
            while '"status":499' not in gw.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            log = gw.log_text()
            assert '"status":499' in log and "client_disconnected" in log
            assert "Exception in ASGI application" not in log  # ended quietly, not as a crash
