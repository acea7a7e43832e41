"""Adapter for any OpenAI-compatible chat-completions API (OpenAI, Groq, Together, vLLM, …).

The client's body is forwarded untouched except for ``model`` (the deployment's upstream
name) and, for streams, ``stream_options.include_usage`` (so the gateway always learns the
usage; the usage chunk is hidden from clients that did not ask for it). Stream chunks are
passed through as the upstream's bytes; only the few chunks the gateway must read are parsed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from app.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamInvalidResponseError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from app.providers.base import (
    Completion,
    StreamChunk,
    UpstreamCall,
    Usage,
    error_from_status,
    upstream_message,
)
from app.providers.http import (
    HTTPBackend,
    Timeouts,
    TransportError,
    TransportTimeout,
    as_backend,
)

_DONE = b"[DONE]"


def upstream_headers(call: UpstreamCall) -> dict[str, str]:
    dep = call.deployment
    headers = {"content-type": "application/json", "x-request-id": call.request_id}
    if dep.api_key:
        headers["authorization"] = f"Bearer {dep.api_key}"
    headers.update(dep.headers)
    return headers


def map_transport_error(exc: TransportError, deployment: str, *, started: bool) -> UpstreamError:
    """Translate a transport failure to the gateway's tree (the message never holds the key)."""
    if isinstance(exc, TransportTimeout) and exc.phase == "connect":
        return UpstreamTimeoutError(
            f"connecting to deployment {deployment} timed out",
            reason="timeout_connect",
            deployment=deployment,
        )
    if isinstance(exc, TransportTimeout):
        reason = "timeout_total" if started else "timeout_first_token"
        return UpstreamTimeoutError(
            f"deployment {deployment} did not answer in time ({reason})",
            reason=reason,
            deployment=deployment,
        )
    return UpstreamConnectionError(
        f"connection to deployment {deployment} failed: {exc}",
        deployment=deployment,
    )


def redact_key(body: bytes, key: str | None) -> bytes:
    """An upstream error body with the deployment's key blanked, in case it was echoed."""
    if key and key.encode() in body:
        return body.replace(key.encode(), b"[redacted]")
    return body


ErrorFactory = Callable[[str, int, bytes, "str | None"], UpstreamError]


async def post_json(
    http: HTTPBackend,
    call: UpstreamCall,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    on_error: ErrorFactory,
) -> tuple[dict[str, Any], float]:
    """One non-streaming upstream call: the decoded JSON object and the seconds it took.

    Shared by every adapter so they agree on timeouts and error mapping. The read timeout
    bounds the wait for the answer's first byte: the reliability walk's budget (first-token
    timeout + expected decode time); the walk bounds the whole attempt (total timeout).
    """
    dep = call.deployment
    start = time.perf_counter()
    try:
        response = await http.post(
            url, payload, headers, Timeouts(call.connect_timeout_s, call.first_token_timeout_s)
        )
    except TransportError as exc:
        raise map_transport_error(exc, dep.id, started=False) from exc
    elapsed = time.perf_counter() - start
    if response.status >= 400:
        raise on_error(
            dep.id,
            response.status,
            redact_key(response.body, dep.api_key),
            response.headers.get("retry-after"),
        )
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamInvalidResponseError(
            f"deployment {dep.id} returned a body that is not JSON", deployment=dep.id
        ) from exc
    if not isinstance(body, dict):
        raise UpstreamInvalidResponseError(
            f"deployment {dep.id} returned JSON that is not an object", deployment=dep.id
        )
    return body, elapsed


class OpenAICompatProvider:
    """Talks to OpenAI-compatible upstreams through the process's pooled HTTP backend."""

    def __init__(self, http: HTTPBackend | httpx.AsyncClient) -> None:
        self._http = as_backend(http)

    def _payload(self, call: UpstreamCall, *, stream: bool) -> bytes:
        body = dict(call.body)
        body["model"] = call.deployment.upstream_model
        if stream:
            body["stream"] = True
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        else:
            body.pop("stream_options", None)
            body["stream"] = False
        return orjson.dumps(body)

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment
        body, elapsed = await post_json(
            self._http,
            call,
            f"{dep.base_url}/chat/completions",
            self._payload(call, stream=False),
            upstream_headers(call),
            error_from_status,
        )
        if not isinstance(body.get("choices"), list):
            raise UpstreamInvalidResponseError(
                f"deployment {dep.id} returned JSON without 'choices'", deployment=dep.id
            )
        usage = Usage.from_openai(body.get("usage"))
        if usage is None:
            usage = Usage(reported=False)
        return Completion(body=body, usage=usage, ttft_s=elapsed)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamChunk]:
        dep = call.deployment
        started = False
        try:
            async with self._http.stream(
                f"{dep.base_url}/chat/completions",
                self._payload(call, stream=True),
                upstream_headers(call),
                Timeouts(call.connect_timeout_s, call.first_token_timeout_s),
            ) as response:
                if response.status >= 400:
                    raise error_from_status(
                        dep.id,
                        response.status,
                        redact_key(await response.read(), dep.api_key),
                        response.headers.get("retry-after"),
                    )
                buffer = b""
                done = False
                async for raw in response.chunks():
                    buffer += raw
                    while True:
                        cut = buffer.find(b"\n\n")
                        if cut < 0:
                            break
                        event, buffer = buffer[:cut], buffer[cut + 2 :]
                        for line in event.replace(b"\r", b"").split(b"\n"):
                            if not line.startswith(b"data:"):
                                continue
                            payload = line[5:].strip()
                            if payload == _DONE:
                                done = True
                                break
                            chunk = self._chunk(payload, dep.id, first=not started)
                            if chunk.content:
                                started = True
                            yield chunk
                        if done:
                            break
                    if done:
                        break
                if not done:
                    raise UpstreamConnectionError(
                        f"deployment {dep.id} ended the stream without [DONE]", deployment=dep.id
                    )
        except TransportError as exc:
            raise map_transport_error(exc, dep.id, started=started) from exc

    def _chunk(self, payload: bytes, deployment: str, *, first: bool) -> StreamChunk:
        """Read only what the gateway needs from a chunk; keep its bytes for the client."""
        if payload.startswith(b'{"error"'):
            raise UpstreamServerError(
                f"deployment {deployment} sent an error mid-stream: {upstream_message(payload)}",
                deployment=deployment,
            )
        has_usage = b'"usage":{' in payload
        has_finish = b'"finish_reason":"' in payload
        if not (first or has_usage or has_finish):
            return StreamChunk(data=payload, content=True)
        try:
            data: Any = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamInvalidResponseError(
                f"deployment {deployment} sent a stream chunk that is not JSON",
                deployment=deployment,
            ) from exc
        choices = data.get("choices") or [] if isinstance(data, dict) else []
        content = False
        finish = None
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                content = True
            finish = choice.get("finish_reason") or finish
        usage = Usage.from_openai(data.get("usage")) if has_usage else None
        return StreamChunk(
            data=payload,
            content=content,
            usage=usage,
            usage_only=usage is not None and not choices,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        """The shared backend is closed by its owner (the app's lifespan)."""
