"""What the Anthropic translation adds per request and per streamed token (not collected by
pytest). Run from the repo root: ``python -m tests.benchmarks.bench_anthropic_translate``."""

from __future__ import annotations

import statistics
import time

import orjson

from app.providers.anthropic_request import to_messages_request
from app.providers.anthropic_response import StreamTranslator

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "does a thing",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
    for i in range(8)
]


def conversation(turns: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = [{"role": "system", "content": "You are helpful. " * 50}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: " + "words " * 60})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + "words " * 80})
    messages.append({"role": "user", "content": "Last question"})
    return messages


def per_call_us(fn, n: int) -> tuple[float, float]:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples), min(samples)


def main() -> None:
    body = {"model": "big", "messages": conversation(10), "tools": TOOLS, "temperature": 0.3}

    def translate(cache: bool) -> None:
        orjson.dumps(
            to_messages_request(
                body,
                upstream_model="claude-sonnet-4-6",
                max_output_tokens=64000,
                stream=True,
                prompt_cache=cache,
            )
        )

    for cache in (False, True):
        med, best = per_call_us(lambda c=cache: translate(c), 2000)
        print(
            f"request translation, 21 messages + 8 tools, prompt_cache={cache}: "
            f"median {med:.1f} us (best {best:.1f} us)"
        )

    delta = {"type": "text_delta", "text": " word"}
    events = [{"type": "content_block_delta", "index": 0, "delta": delta}] * 1000

    def stream() -> None:
        t = StreamTranslator("d", "m")
        t.feed(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": "m",
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            }
        )
        for event in events:
            t.feed(event)
        t.feed(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 1000},
            }
        )
        t.feed({"type": "message_stop"})

    med, best = per_call_us(stream, 50)
    print(
        f"stream translation, 1000 text deltas: median {med / 1000:.2f} us per event "
        f"(best {best / 1000:.2f} us)"
    )


if __name__ == "__main__":
    main()
