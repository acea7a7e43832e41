"""Anthropic Messages API answers, stream events and errors → OpenAI shapes. Pure, no I/O.

- A ``message`` becomes a ``chat.completion``: text blocks joined into ``content``,
  ``tool_use`` blocks into ``tool_calls`` (arguments re-encoded as a JSON string), thinking
  blocks dropped.
- ``stop_reason``: end_turn/stop_sequence/pause_turn → ``stop``, max_tokens and
  model_context_window_exceeded → ``length``, tool_use → ``tool_calls``, refusal →
  ``content_filter``.
- Usage: OpenAI's ``prompt_tokens`` counts every input token, so it is
  ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``;
  ``prompt_tokens_details.cached_tokens`` is ``cache_read_input_tokens``. The cache writes
  are kept apart in :class:`Usage` (``cache_creation_tokens``, and from
  ``cache_creation.ephemeral_1h_input_tokens`` the part written to the 1-hour cache) because
  Anthropic bills them above the input price (1.25x, 1-hour 2x).
- :class:`StreamTranslator` turns stream events into OpenAI chunks one by one; an ``error``
  event raises the matching :class:`UpstreamError`. The ``message_start`` chunk carries the
  input side of the usage (``StreamChunk.prompt_usage``: cache reads and writes included),
  so a stream cut before ``message_stop`` is still priced with its cache breakdown.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from app.errors import (
    UpstreamAuthError,
    UpstreamContextWindowError,
    UpstreamError,
    UpstreamTimeoutError,
)
from app.providers.base import StreamChunk, Usage, error_from_status, upstream_message

FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status each Anthropic error type stands for (used for errors sent mid-stream).
ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_CONTEXT_MARKERS: Final = ("exceed context limit", "prompt is too long", "context window")


def finish_reason(stop_reason: Any) -> str | None:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason`` (None while running)."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(str(stop_reason), "stop")


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return int(value) if isinstance(value, int | float) else 0


def _count_1h(raw: Mapping[str, Any]) -> int | None:
    """``cache_creation.ephemeral_1h_input_tokens``, None when the usage has no breakdown."""
    breakdown = raw.get("cache_creation")
    if not isinstance(breakdown, Mapping) or breakdown.get("ephemeral_1h_input_tokens") is None:
        return None
    return _count(breakdown, "ephemeral_1h_input_tokens")


def usage_from_anthropic(raw: Any) -> Usage | None:
    """Usage in the gateway's terms; cached and cache-creation tokens are part of the prompt."""
    if not isinstance(raw, Mapping):
        return None
    cached = _count(raw, "cache_read_input_tokens")
    creation = _count(raw, "cache_creation_input_tokens")
    return Usage(
        prompt_tokens=_count(raw, "input_tokens") + cached + creation,
        completion_tokens=_count(raw, "output_tokens"),
        cached_tokens=cached,
        cache_creation_tokens=creation,
        cache_creation_1h_tokens=min(_count_1h(raw) or 0, creation),
    )


def _block_index(event: Mapping[str, Any]) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else 0


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def to_chat_completion(message: Mapping[str, Any], model: str, usage: Usage) -> dict[str, Any]:
    """The ``chat.completion`` body for a Messages API ``message``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _arguments(block.get("input")),
                    },
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")) or "stop",
            }
        ],
        "usage": usage.to_openai(),
    }


# -- errors -----------------------------------------------------------------------------------
def anthropic_error(
    deployment: str, status: int, body: bytes, retry_after: str | None = None
) -> UpstreamError:
    """Classify an Anthropic error response (or error event) into the gateway's tree."""
    lowered = upstream_message(body).lower()
    if status == 402:
        return UpstreamAuthError(
            f"deployment {deployment}'s Anthropic account cannot be billed (upstream 402); the "
            "gateway operator must fix the provider account",
            deployment=deployment,
            upstream_status=status,
        )
    if status in (400, 413) and any(m in lowered for m in _CONTEXT_MARKERS):
        return UpstreamContextWindowError(
            f"the request does not fit deployment {deployment}'s context window: "
            f"{upstream_message(body)}",
            deployment=deployment,
            upstream_status=status,
        )
    return error_from_status(deployment, status, body, retry_after)


def stream_error(deployment: str, event: Mapping[str, Any]) -> UpstreamError:
    """The error for an ``error`` event inside a stream (after the HTTP 200 was sent)."""
    error = event.get("error")
    kind = str(error.get("type")) if isinstance(error, Mapping) else "api_error"
    detail = str(error.get("message") or "") if isinstance(error, Mapping) else ""
    status = ERROR_STATUS.get(kind, 500)
    message = f"deployment {deployment} sent {kind} mid-stream: {detail[:300]}"
    if status == 504:
        return UpstreamTimeoutError(message, reason="timeout_total", deployment=deployment)
    classified = anthropic_error(deployment, status, orjson.dumps(event))
    return type(classified)(message, deployment=deployment, upstream_status=status)


# -- streams ----------------------------------------------------------------------------------
_CHUNK_TAIL: Final = b',"logprobs":null,"finish_reason":null}]}'


class StreamTranslator:
    """Turns one stream's Anthropic events into OpenAI ``chat.completion.chunk`` bytes.

    Holds the per-stream state: the chunk prefix (id, created, model), built once at
    ``message_start``; which content block is which tool call; and the cumulative usage.
    """

    __slots__ = (
        "_deployment",
        "_model",
        "_prefix",
        "_tool_index",
        "_usage",
        "_id",
        "_created",
        "stopped",
    )

    def __init__(self, deployment: str, model: str) -> None:
        self._deployment = deployment
        self._model = model
        self._tool_index: dict[int, int] = {}
        self._usage = Usage()
        self._id = ""
        self._created = int(time.time())
        self._prefix = b""
        self._set_prefix("", model)
        self.stopped = False

    def _set_prefix(self, message_id: str, model: str) -> None:
        self._id, self._model = message_id, model
        head = orjson.dumps(
            {
                "id": message_id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": model,
            }
        )
        self._prefix = head[:-1] + b',"choices":[{"index":0,"delta":'

    def _delta(self, delta: Mapping[str, Any]) -> bytes:
        return self._prefix + orjson.dumps(delta) + _CHUNK_TAIL

    def _merge_usage(self, raw: Any) -> None:
        """message_delta usage is cumulative: later non-null counts replace earlier ones."""
        if not isinstance(raw, Mapping):
            return
        u = self._usage
        if raw.get("output_tokens") is not None:
            u.completion_tokens = _count(raw, "output_tokens")
        fresh = u.prompt_tokens - u.cached_tokens - u.cache_creation_tokens
        if raw.get("input_tokens") is not None:
            fresh = _count(raw, "input_tokens")
        if raw.get("cache_read_input_tokens") is not None:
            u.cached_tokens = _count(raw, "cache_read_input_tokens")
        if raw.get("cache_creation_input_tokens") is not None:
            u.cache_creation_tokens = _count(raw, "cache_creation_input_tokens")
        one_hour = _count_1h(raw)
        if one_hour is not None:
            u.cache_creation_1h_tokens = one_hour
        u.cache_creation_1h_tokens = min(u.cache_creation_1h_tokens, u.cache_creation_tokens)
        u.prompt_tokens = fresh + u.cached_tokens + u.cache_creation_tokens

    @property
    def usage(self) -> Usage:
        u = self._usage
        return Usage(
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.cache_creation_tokens,
            u.cache_creation_1h_tokens,
        )

    def feed(self, event: Mapping[str, Any]) -> StreamChunk | None:
        """The chunk for one event, or None when the event has no OpenAI counterpart."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, Mapping):
                return None
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if not text:
                    return None
                return StreamChunk.event(self._delta({"content": text}), content=True)
            if dtype == "input_json_delta":
                index = self._tool_index.get(_block_index(event))
                partial = delta.get("partial_json")
                if index is None or not partial:
                    return None
                call = {"index": index, "function": {"arguments": partial}}
                return StreamChunk.event(self._delta({"tool_calls": [call]}), content=True)
            return None  # thinking_delta, signature_delta, citations_delta
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, Mapping):
                self._set_prefix(
                    str(message.get("id") or ""), str(message.get("model") or self._model)
                )
                start = usage_from_anthropic(message.get("usage"))
                if start is not None:
                    self._usage = start
                    # Kept by the gateway in case the stream is cut before message_stop.
                    return StreamChunk.event(
                        self._delta({"role": "assistant", "content": ""}), prompt_usage=self.usage
                    )
            return StreamChunk.event(self._delta({"role": "assistant", "content": ""}))
        if kind == "message_delta":
            self._merge_usage(event.get("usage"))
            delta = event.get("delta")
            reason = finish_reason(delta.get("stop_reason")) if isinstance(delta, Mapping) else None
            if reason is None:
                return None
            data = (
                self._prefix
                + b'{},"logprobs":null,"finish_reason":'
                + orjson.dumps(reason)
                + b"}]}"
            )
            return StreamChunk.event(data, finish_reason=reason)
        if kind == "message_stop":
            self.stopped = True
            usage = self.usage
            data = orjson.dumps(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": usage.to_openai(),
                }
            )
            return StreamChunk.event(data, usage=usage, usage_only=True)
        if kind == "error":
            raise stream_error(self._deployment, event)
        return None  # ping, content_block_stop, and event types added to the API later

    def _block_start(self, event: Mapping[str, Any]) -> StreamChunk | None:
        block = event.get("content_block")
        if not isinstance(block, Mapping):
            return None
        if block.get("type") == "text" and block.get("text"):
            return StreamChunk.event(self._delta({"content": block["text"]}), content=True)
        if block.get("type") != "tool_use":
            return None
        index = len(self._tool_index)
        self._tool_index[_block_index(event)] = index
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return StreamChunk.event(self._delta({"tool_calls": [call]}), content=True)
