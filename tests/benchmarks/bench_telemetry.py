"""What telemetry (the request log line + every metric) costs per request (not collected by
pytest). Run from the repo root: ``python -m tests.benchmarks.bench_telemetry``.

Two measurements in the same run:

1. End to end: two real uvicorn gateways on the same instant simulated deployments, one with
   telemetry (``PARETO_TELEMETRY=true``, logs to a file as in production) and one without;
   requests alternate between them (sequential, so each latency is one request's), streaming
   and not. Reports client-side p50/p99 of both and the difference.
2. The emit itself: :class:`RecordSink` turning a realistic finished record into its JSON log
   line and every metric, per call (no network noise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from app.telemetry.emit import RecordSink
from app.telemetry.logging import configure_logging
from app.telemetry.metrics import Metrics
from app.telemetry.record import Record
from tests.conftest import small_config
from tests.support.procs import gateway

MSG = [{"role": "user", "content": "Say hello to the benchmark"}]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def end_to_end(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    with (
        gateway(config, tmp, env={"PARETO_TELEMETRY": "true"}, name="on") as on,
        gateway(config, tmp, env={"PARETO_TELEMETRY": "false"}, name="off") as off,
        httpx.Client(timeout=10) as client,
    ):
        for stream in (False, True):
            body = {"model": "small", "messages": MSG, "stream": stream}
            lat: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(n + 200):
                for name, gw in (("on", on), ("off", off)) if i % 2 else (("off", off), ("on", on)):
                    start = time.perf_counter()
                    r = client.post(f"{gw.url}/v1/chat/completions", json=body)
                    r.read()
                    elapsed = (time.perf_counter() - start) * 1000
                    assert r.status_code == 200, r.text
                    if i >= 200:  # warm-up
                        lat[name].append(elapsed)
            kind = "stream" if stream else "non-stream"
            for q in (0.5, 0.99):
                a, b = pct(lat["on"], q), pct(lat["off"], q)
                print(
                    f"{kind:10s} p{int(q * 100):<2d}  with telemetry {a:7.3f} ms   without "
                    f"{b:7.3f} ms   difference {a - b:+7.3f} ms"
                )
        lines = sum(1 for line in on.log_text().splitlines() if '"event":"request"' in line)
        print(f"(telemetry gateway wrote {lines} request log lines; the other wrote none)")


def emit_cost(n: int) -> None:
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives for the process
    sys.stdout = devnull
    try:
        configure_logging("info")
        metrics = Metrics()
        sink = RecordSink(metrics)
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for i in range(n):
                rec = Record(
                    request_id=f"req-{i}",
                    router_policy="auto",
                    quality_floor=40.0,
                    provider="groq",
                    model="gpt-oss-120b",
                    deployment="gpt-oss-120b@groq",
                    stream=True,
                    input_tokens=812,
                    cached_input_tokens=512,
                    output_tokens=240,
                    cache_hit=True,
                    ttft_ms=210.0,
                    decode_tps=480.0,
                    upstream_ms=700.0,
                    routing_ms=0.04,
                    cost_usd=0.000123,
                    est_cost_usd=0.00013,
                    attempts=2,
                    fallback_reason="rate_limited",
                    attempt_log=[
                        {"deployment": "gpt-oss-120b@cerebras", "fallback_reason": "rate_limited"},
                        {"deployment": "gpt-oss-120b@groq"},
                    ],
                    session_sticky=True,
                )
                rec.finish_timing(0.7012)
                sink(rec)
            samples.append((time.perf_counter() - start) / n * 1e6)
    finally:
        sys.stdout = sys.__stdout__
        devnull.close()
    print(
        f"emit (log line + all metrics) per request: median {statistics.median(samples):.1f} us, "
        f"best {min(samples):.1f} us ({n} records x 5 rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per gateway and mode")
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    emit_cost(args.records)
    end_to_end(args.requests)


if __name__ == "__main__":
    main()
