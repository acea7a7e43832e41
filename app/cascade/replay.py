"""Replay a buffered (already checked) completion to a streaming client as SSE chunks.

A cascade tier that is not the last one is buffered whole, so the gateway can judge it before
the client sees a byte. When it is accepted, its answer goes out as a short burst of
``chat.completion.chunk`` events: role, content (or tool calls / refusal), finish, usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

_DONE = b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def completion_events(body: dict[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """The SSE events (``data: …`` lines, then ``[DONE]``) of a ``chat.completion`` body."""
    head = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
        "model": body.get("model"),
        "system_fingerprint": body.get("system_fingerprint"),
    }

    def chunk(index: int, delta: dict[str, Any], finish: Any = None, logprobs: Any = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return _event({**head, "choices": [choice]})

    for choice in body.get("choices") or []:
        index = int(choice.get("index") or 0)
        message = choice.get("message") or {}
        yield chunk(index, {"role": "assistant", "content": ""})
        if isinstance(message.get("refusal"), str) and message["refusal"]:
            yield chunk(index, {"refusal": message["refusal"]})
        content = message.get("content")
        if isinstance(content, str) and content:
            yield chunk(index, {"content": content}, logprobs=choice.get("logprobs"))
        for i, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") or {}
            delta = {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call.get("id"),
                        "type": call.get("type", "function"),
                        "function": {"name": fn.get("name"), "arguments": fn.get("arguments")},
                    }
                ]
            }
            yield chunk(index, delta)
        yield chunk(index, {}, finish=choice.get("finish_reason") or "stop")
    if include_usage and body.get("usage") is not None:
        yield _event({**head, "choices": [], "usage": body["usage"]})
    yield _DONE
