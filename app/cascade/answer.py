"""One tier's answer in the shape the acceptance checks read, from a completion or a stream.

Only the first choice is judged (``n > 1`` answers are judged by their first choice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from app.tokens import content_text


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model made: the function's name and its raw JSON arguments."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What a tier answered: text, why it stopped, tool calls, refusal, token logprobs."""

    text: str
    finish_reason: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    # Per-token log-probabilities, or None when the deployment did not return them.
    logprobs: tuple[float, ...] | None = None

    @classmethod
    def from_completion(cls, body: dict[str, Any]) -> Answer:
        """Read the first choice of an OpenAI ``chat.completion`` body."""
        choices = body.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        calls = tuple(
            ToolCall(
                name=str((c.get("function") or {}).get("name") or ""),
                arguments=str((c.get("function") or {}).get("arguments") or ""),
            )
            for c in message.get("tool_calls") or []
            if isinstance(c, dict)
        )
        refusal = message.get("refusal")
        return cls(
            text=content_text(message.get("content")),
            finish_reason=choice.get("finish_reason"),
            tool_calls=calls,
            refusal=refusal if isinstance(refusal, str) and refusal else None,
            logprobs=_logprob_values(choice.get("logprobs")),
        )


def _logprob_values(raw: Any) -> tuple[float, ...] | None:
    if not isinstance(raw, dict):
        return None
    content = raw.get("content")
    if not isinstance(content, list):
        return None
    values = tuple(
        float(t["logprob"])
        for t in content
        if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)
    )
    return values or None


@dataclass(slots=True)
class _CallParts:
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class AnswerBuilder:
    """Accumulates ``chat.completion.chunk`` payloads into an :class:`Answer`."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, _CallParts] = {}
        self._logprobs: list[float] = []
        self._saw_logprobs = False
        self.finish_reason: str | None = None

    def add(self, data: bytes) -> None:
        """Read one chunk's JSON (usage-only chunks and unparsable chunks add nothing)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str):
            self._text.append(content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            self._refusal.append(refusal)
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            parts = self._calls.setdefault(int(call.get("index") or 0), _CallParts())
            fn = call.get("function") or {}
            if fn.get("name"):
                parts.name = str(fn["name"])
            if isinstance(fn.get("arguments"), str):
                parts.arguments.append(fn["arguments"])
        values = _logprob_values(choice.get("logprobs"))
        if values is not None:
            self._saw_logprobs = True
            self._logprobs.extend(values)
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])

    def build(self) -> Answer:
        """The answer so far."""
        return Answer(
            text="".join(self._text),
            finish_reason=self.finish_reason,
            tool_calls=tuple(
                ToolCall(p.name, "".join(p.arguments)) for _, p in sorted(self._calls.items())
            ),
            refusal="".join(self._refusal) or None,
            logprobs=tuple(self._logprobs) if self._saw_logprobs else None,
        )


def strip_logprobs_chunk(data: bytes) -> bytes:
    """A stream chunk without the ``logprobs`` the gateway asked for on its own behalf."""
    if b'"logprobs"' not in data:
        return data
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    for choice in chunk.get("choices") or []:
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
    return orjson.dumps(chunk)


def strip_logprobs_body(body: dict[str, Any]) -> None:
    """Remove the gateway-requested ``logprobs`` from a completion body, in place."""
    for choice in body.get("choices") or []:
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
