"""Adapter for Anthropic's Messages API (``POST {base_url}/v1/messages``).

Requests are translated by :mod:`app.providers.anthropic_request`, answers, stream events
and errors by :mod:`app.providers.anthropic_response`; this module does the HTTP: the
``x-api-key`` and ``anthropic-version`` headers, timeouts, SSE framing, and the mapping of
transport failures. It shares the process's pooled HTTP backend with the other adapters.

Prompt caching is opt-in: ``prompt_cache: true`` on a deployment, or
``UpstreamCall.prompt_cache`` per request (which wins), adds ``cache_control`` breakpoints
(:func:`~app.providers.anthropic_request.add_cache_breakpoints`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson

from app.errors import (
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
)
from app.providers.anthropic_request import (
    ANTHROPIC_VERSION,
    UntranslatableRequestError,
    to_messages_request,
)
from app.providers.anthropic_response import (
    StreamTranslator,
    anthropic_error,
    to_chat_completion,
    usage_from_anthropic,
)
from app.providers.base import Completion, StreamChunk, UpstreamCall, Usage
from app.providers.http import HTTPBackend, Timeouts, TransportError, as_backend
from app.providers.openai_compat import map_transport_error, post_json, redact_key


def messages_url(base_url: str | None) -> str:
    """The Messages endpoint; a base URL configured with or without ``/v1`` both work."""
    base = (base_url or "https://api.anthropic.com").rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def anthropic_headers(call: UpstreamCall) -> dict[str, str]:
    dep = call.deployment
    headers = {
        "content-type": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        "x-request-id": call.request_id,
    }
    if dep.api_key:
        headers["x-api-key"] = dep.api_key
    headers.update(dep.headers)
    return headers


def _redacted(body: bytes, call: UpstreamCall) -> bytes:
    return redact_key(body, call.deployment.api_key)


def _sse_data(event: bytes) -> bytes | None:
    """The ``data:`` payload of one SSE event (lines joined), or None for comments/empty."""
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class AnthropicProvider:
    """Talks to the Anthropic Messages API through the process's pooled HTTP backend."""

    def __init__(self, http: HTTPBackend | httpx.AsyncClient) -> None:
        self._http = as_backend(http)

    def _payload(self, call: UpstreamCall, *, stream: bool) -> bytes:
        dep = call.deployment
        cache = dep.caches_prompt(call.prompt_cache)  # the router's estimate asks the same
        try:
            request = to_messages_request(
                call.body,
                upstream_model=dep.upstream_model,
                max_output_tokens=dep.model.max_output_tokens,
                stream=stream,
                prompt_cache=cache,
            )
        except UntranslatableRequestError as exc:
            raise UpstreamBadRequestError(
                f"{exc} (deployment {dep.id} speaks the Anthropic Messages API)",
                deployment=dep.id,
                param=exc.param,
            ) from exc
        return orjson.dumps(request)

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment

        message, elapsed = await post_json(
            self._http,
            call,
            messages_url(dep.base_url),
            self._payload(call, stream=False),
            anthropic_headers(call),
            anthropic_error,
        )
        if not isinstance(message.get("content"), list):
            raise UpstreamInvalidResponseError(
                f"deployment {dep.id} returned JSON that is not a Messages API message",
                deployment=dep.id,
            )
        usage = usage_from_anthropic(message.get("usage")) or Usage(reported=False)
        body = to_chat_completion(message, dep.upstream_model, usage)
        return Completion(body=body, usage=usage, ttft_s=elapsed)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamChunk]:
        dep = call.deployment
        translator = StreamTranslator(dep.id, dep.upstream_model)
        started = False
        try:
            async with self._http.stream(
                messages_url(dep.base_url),
                self._payload(call, stream=True),
                anthropic_headers(call),
                Timeouts(call.connect_timeout_s, call.first_token_timeout_s),
            ) as response:
                if response.status >= 400:
                    raise anthropic_error(
                        dep.id,
                        response.status,
                        _redacted(await response.read(), call),
                        response.headers.get("retry-after"),
                    )
                buffer = b""
                async for raw in response.chunks():
                    buffer += raw
                    if b"\r" in buffer:
                        buffer = buffer.replace(b"\r\n", b"\n")
                    while not translator.stopped:
                        cut = buffer.find(b"\n\n")
                        if cut < 0:
                            break
                        data = _sse_data(buffer[:cut])
                        buffer = buffer[cut + 2 :]
                        if data is None:
                            continue
                        try:
                            event = orjson.loads(data)
                        except orjson.JSONDecodeError as exc:
                            raise UpstreamInvalidResponseError(
                                f"deployment {dep.id} sent a stream event that is not JSON",
                                deployment=dep.id,
                            ) from exc
                        if not isinstance(event, dict):
                            continue
                        chunk = translator.feed(event)
                        if chunk is not None:
                            started = started or chunk.content
                            yield chunk
                    if translator.stopped:
                        break
                if not translator.stopped:
                    raise UpstreamConnectionError(
                        f"deployment {dep.id} ended the stream without message_stop",
                        deployment=dep.id,
                        request_sent=True,
                    )
        except TransportError as exc:
            raise map_transport_error(exc, dep.id, started=started) from exc

    async def aclose(self) -> None:
        """The shared backend is closed by its owner (the app's lifespan)."""
