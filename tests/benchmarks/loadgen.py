"""A small, fast HTTP/1.1 load generator (raw asyncio streams on uvloop), run as its own process.

Usage: python -m tests.benchmarks.loadgen URL BODY_JSON_FILE N CONCURRENCY [DEADLINE_S]
Prints one JSON object: per-request latency and TTFT (seconds), errors, and the generator's
own CPU seconds, so a benchmark can show the generator is not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

_CONTENT = b'"delta":{"content":"'


async def _one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, stream: bool
) -> tuple[float, float | None, int]:
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    ttft: float | None = None
    if b"transfer-encoding: chunked" in lower:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            if stream and ttft is None and _CONTENT in data:
                ttft = time.perf_counter() - start
    else:
        idx = lower.find(b"content-length:")
        length = int(lower[idx + 15 : lower.find(b"\r\n", idx)].strip()) if idx >= 0 else 0
        await reader.readexactly(length)
    return time.perf_counter() - start, ttft, status


async def run(url: str, body: bytes, n: int, concurrency: int, deadline_s: float) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stream = b'"stream":true' in body.replace(b" ", b"")
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer "
        f"{os.environ.get('BENCH_KEY', 'none')}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    remaining = n
    stop_at = time.perf_counter() + deadline_s

    async def worker() -> None:
        nonlocal remaining, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining > 0 and time.perf_counter() < stop_at:
                remaining -= 1
                try:
                    latency, ttft, status = await _one(reader, writer, request, stream)
                except (asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                if status != 200:
                    errors += 1
                    continue
                latencies.append(latency)
                if ttft is not None:
                    ttfts.append(ttft)
        finally:
            writer.close()

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall0
    return {
        "latencies": latencies,
        "ttfts": ttfts,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
    }


def main() -> None:
    url, body_file, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    deadline = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    with open(body_file, "rb") as f:
        body = f.read()
    try:
        import uvloop

        result = uvloop.run(run(url, body, n, concurrency, deadline))
    except ImportError:
        result = asyncio.run(run(url, body, n, concurrency, deadline))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
