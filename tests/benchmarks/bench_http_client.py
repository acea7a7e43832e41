"""CPU per upstream call of each HTTP backend, against `pareto simulate --instant`.

    python -m tests.benchmarks.bench_http_client [--n 3000] [--rounds 3]

The simulator runs in its own process; the backends take turns (round-robin, several
rounds) in this one, so machine noise hits them alike. Reports CPU µs per call (this
process only: the client's own cost, syscalls included) and wall µs per call, for a JSON
POST and for a 256-token stream read to the end. Loopback only; bounded by --n.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import uvloop

from app.providers.http import AiohttpBackend, HTTPBackend, HttpxBackend, Timeouts
from app.providers.http1 import Http1Backend
from tests.support.procs import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
T = Timeouts(connect=5.0, read=30.0)
JSON = b'{"model":"bench","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
STREAM = (
    b'{"model":"bench","messages":[{"role":"user","content":"Say hello"}],"max_tokens":256,'
    b'"stream":true}'
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}


async def one_round(backend: HTTPBackend, url: str, n: int, stream: bool) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        if stream:
            async with backend.stream(url, STREAM, HEADERS, T) as response:
                async for _chunk in response.chunks():
                    pass
        else:
            response = await backend.post(url, JSON, HEADERS, T)
            assert response.status == 200
    return (time.process_time() - cpu0) / n * 1e6, (time.perf_counter() - wall0) / n * 1e6


async def run(url: str, n: int, rounds: int) -> None:
    backends: dict[str, HTTPBackend] = {
        "http1": Http1Backend(),
        "aiohttp": AiohttpBackend(),
        "httpx": HttpxBackend(),
    }
    for stream in (False, True):
        count = n // 8 if stream else n
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in backends}
        for backend in backends.values():  # warm-up
            await one_round(backend, url, 50, stream)
        for _ in range(rounds):
            for name, backend in backends.items():
                results[name].append(await one_round(backend, url, count, stream))
        kind = "stream256" if stream else "json"
        for name, rows in results.items():
            cpu = statistics.median(r[0] for r in rows)
            wall = statistics.median(r[1] for r in rows)
            print(f"{kind:10s} {name:8s} cpu {cpu:8.0f} us/call   wall {wall:8.0f} us/call")
    for backend in backends.values():
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "app", "simulate", "--port", str(port), "--instant"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=sim)
        uvloop.run(run(f"http://127.0.0.1:{port}/v1/chat/completions", args.n, args.rounds))
    finally:
        sim.terminate()
        sim.wait(timeout=15)


if __name__ == "__main__":
    main()
