"""The provider protocol and the wire types every adapter speaks.

An adapter translates one upstream API to and from OpenAI's chat-completions shape and maps
every upstream failure to the :mod:`app.errors` tree (:func:`error_from_status`), so the rest
of the gateway never sees httpx or a provider's error format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from app.catalog.model import Deployment
from app.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamContextWindowError,
    UpstreamError,
    UpstreamInvalidResponseError,
    UpstreamRateLimitedError,
    UpstreamServerError,
)


@dataclass(slots=True)
class Usage:
    """Token usage of one attempt. ``reported`` is False when the gateway counted itself.

    ``prompt_tokens`` counts every input token; ``cached_tokens`` of them were read from the
    provider's prompt cache and ``cache_creation_tokens`` written to it (Anthropic), of which
    ``cache_creation_1h_tokens`` went to the 1-hour cache. Each part has its own price
    (:meth:`app.catalog.model.Deployment.static_cost_usd`).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    reported: bool = True

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    @classmethod
    def from_openai(cls, raw: Any) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        details = raw.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        return cls(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            cached_tokens=int(cached or 0),
        )


@dataclass(slots=True)
class UpstreamCall:
    """One attempt: the OpenAI-shaped body to send (not to be mutated) and its limits.

    ``prompt_cache`` asks adapters that support explicit prompt caching (Anthropic) to add
    cache breakpoints; None leaves it to the deployment's ``prompt_cache`` setting.
    """

    deployment: Deployment
    body: dict[str, Any]
    request_id: str
    connect_timeout_s: float
    first_token_timeout_s: float
    total_timeout_s: float
    prompt_cache: bool | None = None


@dataclass(slots=True)
class Completion:
    """A whole non-streaming answer in OpenAI ``chat.completion`` shape."""

    body: dict[str, Any]
    usage: Usage
    ttft_s: float | None = None


@dataclass(slots=True)
class StreamChunk:
    """A piece of an OpenAI ``chat.completion.chunk`` stream, framed for the client.

    ``data`` is one or more complete SSE events (``data: …\\n\\n``) that the gateway writes
    unchanged: the OpenAI-compatible adapter yields everything one network read completed as
    one chunk, so the relay costs one step per read, not per token. ``content`` is true when
    any of its events carries generated text or a tool-call delta (the first such chunk holds
    the first token: failover stops being possible there). ``usage`` is read from the event
    that reports it; ``usage_only`` marks a chunk holding just the usage event with no choices
    (adapters keep it a chunk of its own), hidden from clients that did not ask for usage.
    ``content_bytes`` is the size of the content events' payloads, from which the gateway
    counts output tokens itself when the upstream reports no usage. Once the first token is
    out, the OpenAI-compatible reader marks every chunk ``content`` (finish event included)
    without looking inside, and leaves ``finish_reason`` unset: nothing in the relay reads
    it; adapters that translate events (Anthropic) set it. ``prompt_usage`` is the input side
    of the usage when the upstream reports it at the start (Anthropic's ``message_start``:
    input, cache-read and cache-write tokens), set on a chunk before the first content, so
    it is in the stream's head; a stream cut before its final ``usage`` is priced with it
    (only the output is then counted by the gateway).
    """

    data: bytes
    content: bool = False
    usage: Usage | None = None
    usage_only: bool = False
    finish_reason: str | None = None
    content_bytes: int = 0
    prompt_usage: Usage | None = None

    @classmethod
    def event(
        cls,
        payload: bytes,
        *,
        content: bool = False,
        usage: Usage | None = None,
        usage_only: bool = False,
        finish_reason: str | None = None,
        prompt_usage: Usage | None = None,
    ) -> StreamChunk:
        """One event's JSON ``payload`` as a framed chunk (adapters that translate events)."""
        return cls(
            b"data: " + payload + b"\n\n",
            content,
            usage,
            usage_only,
            finish_reason,
            len(payload) if content else 0,
            prompt_usage,
        )


class Provider(Protocol):
    """What every adapter implements. Errors are raised as :class:`UpstreamError`."""

    async def complete(self, call: UpstreamCall) -> Completion: ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[StreamChunk]: ...

    async def aclose(self) -> None: ...


_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
)


def upstream_message(body: bytes) -> str:
    """The error message inside an upstream error body, if there is one (never the key)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:500]
    return ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only; dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_status(
    deployment: str, status: int, body: bytes, retry_after: str | None = None
) -> UpstreamError:
    """Classify an upstream HTTP error once, at the edge, into the gateway's error tree."""
    detail = upstream_message(body)
    lowered = detail.lower()
    if status in (401, 403):
        return UpstreamAuthError(
            f"deployment {deployment} rejected the gateway's credentials (upstream {status}); "
            "the gateway operator must fix its provider key",
            deployment=deployment,
            upstream_status=status,
        )
    if status == 429:
        return UpstreamRateLimitedError(
            f"deployment {deployment} is rate limited upstream",
            deployment=deployment,
            upstream_status=status,
            retry_after=parse_retry_after(retry_after),
        )
    if status in (400, 413, 422) and any(m in lowered for m in _CONTEXT_MARKERS):
        return UpstreamContextWindowError(
            f"the request does not fit deployment {deployment}'s context window: {detail}",
            deployment=deployment,
            upstream_status=status,
        )
    if 400 <= status < 500 and status not in (404, 408, 409):
        return UpstreamBadRequestError(
            detail or f"upstream rejected the request with status {status}",
            deployment=deployment,
            upstream_status=status,
        )
    if status >= 500 or status in (404, 408, 409):
        return UpstreamServerError(
            f"deployment {deployment} failed with status {status}",
            deployment=deployment,
            upstream_status=status,
        )
    return UpstreamInvalidResponseError(
        f"deployment {deployment} answered with unexpected status {status}",
        deployment=deployment,
        upstream_status=status,
    )
