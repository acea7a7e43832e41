"""Adapter for any OpenAI-compatible chat-completions API (OpenAI, Groq, Together, vLLM, …).

The client's body is forwarded untouched except for ``model`` (the deployment's upstream
name) and, for streams, ``stream_options.include_usage`` (so the gateway always learns the
usage; the usage chunk is hidden from clients that did not ask for it). Streams are passed
through as the upstream's bytes, one chunk per network read; only the few events the gateway
must read are parsed (:mod:`app.providers.openai_stream`).
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
    UpstreamTimeoutError,
)
from app.providers.base import (
    Completion,
    StreamChunk,
    UpstreamCall,
    Usage,
    error_from_status,
)
from app.providers.http import (
    HTTPBackend,
    Timeouts,
    TransportError,
    TransportTimeout,
    as_backend,
)
from app.providers.openai_stream import ChunkReader


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
        request_sent=exc.request_sent,
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
        reader: ChunkReader | None = None
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
                reader = ChunkReader(dep.id)
                async for raw in response.chunks():
                    for chunk in reader.feed(raw):
                        yield chunk
                    if reader.error is not None:
                        raise reader.error
                    if reader.done:
                        break
                if not reader.done:
                    raise UpstreamConnectionError(
                        f"deployment {dep.id} ended the stream without [DONE]",
                        deployment=dep.id,
                        request_sent=True,
                    )
        except TransportError as exc:
            started = reader is not None and reader.started
            raise map_transport_error(exc, dep.id, started=started) from exc

    async def aclose(self) -> None:
        """The shared backend is closed by its owner (the app's lifespan)."""
