"""CPU per stream of the SSE reader (app/providers/openai_stream.py), offline, no network.

    python -m tests.benchmarks.bench_stream_reader [--rounds 5] [--n 300]

Builds a 256-token OpenAI-style stream (role event, 256 content events, finish, usage,
[DONE]) and feeds it to ChunkReader cut into 1, 15 and 27 reads (an instant upstream as
the gateway sees it) and one event per read (a paced upstream). Reports the best of
--rounds of --n streams, in µs per stream and per read.
"""

from __future__ import annotations

import argparse
import time

import orjson

from app.providers.openai_stream import ChunkReader


def _event(delta: dict[str, object], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-bench0000000000",
        "object": "chat.completion.chunk",
        "created": 1795365370,
        "model": "bench",
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def stream(tokens: int = 256) -> list[bytes]:
    usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
    events = [_event({"role": "assistant", "content": ""})]
    events += [_event({"content": f"word{i} "}) for i in range(tokens)]
    events.append(_event({}, "stop"))
    last = {"id": "chatcmpl-bench0000000000", "object": "chat.completion.chunk", "choices": []}
    events.append(b"data: " + orjson.dumps({**last, "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def best_us(reads: list[bytes], rounds: int, n: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            reader = ChunkReader("bench")
            for raw in reads:
                reader.feed(raw)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    events = stream()
    data = b"".join(events)
    print(f"stream: {len(events)} events, {len(data)} bytes")
    for parts in (1, 15, 27):
        step = len(data) // parts + 1
        reads = [data[i : i + step] for i in range(0, len(data), step)]
        us = best_us(reads, args.rounds, args.n)
        print(f"{parts:4d} reads: {us:8.1f} us per stream, {us / len(reads):6.2f} us per read")
    us = best_us(events, args.rounds, args.n)
    print(
        f"one event per read ({len(events)} reads): {us:8.1f} us per stream, "
        f"{us / len(events):6.2f} us per read"
    )


if __name__ == "__main__":
    main()
