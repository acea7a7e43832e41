"""Cheap token counting used where no tokenizer runs (simulated usage, fallback counts).

The estimate is ``ceil(chars / 4)`` plus a small per-message overhead, the same rule the
routing datasets use. It is a counter of last resort: real usage from the upstream wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``."""
    return (len(text) + 3) // 4


def content_text(content: Any) -> str:
    """The text of an OpenAI ``content`` value (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return ""


def estimate_messages_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of a message list."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(content_text(message.get("content")))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(fn, Mapping):
                    total += estimate_tokens(str(fn.get("arguments", "")) + str(fn.get("name", "")))
    return total
