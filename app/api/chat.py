"""``/v1/chat/completions`` as a plain ASGI callable: the one endpoint every request pays for.

FastAPI's route matching, dependency solving, ``Request``/``Response`` objects, exception
middlewares and the two pure-ASGI middlewares cost about 0.2 ms of CPU per request, more than
the routing decision itself. :class:`GatewayApp` (``app.main``) hands this one path straight
to :class:`ChatEndpoint`, which does the same jobs inline and in the same order:

1. request id (a safe incoming ``x-request-id`` or a new one) bound into the log context,
2. authentication (:func:`app.auth.middleware.authenticate_headers`), 401 before the body,
3. the body (size limit, slow-client timeout), parse + validate, the key's rate limits,
4. :meth:`Gateway.handle_chat`, rendered as JSON or as an SSE stream,
5. every error an OpenAI-shaped body with the request id; one record per request.

A client that goes away is noticed while the gateway waits (the server's protocol says so
under ``pareto serve``; elsewhere one ``receive`` is kept pending): the request's task is
cancelled, so the upstream call is closed, and the record says 499.
The budget is settled after the last byte is sent (for a stream that completed, after its
``[DONE]`` went out as the response's end).

A stream is written chunk by chunk as the gateway relays it (one chunk per upstream read,
:mod:`app.providers.openai_stream`), in this task: no pump task or queue between the two, so a
client that stops reading stops the upstream reads too (its socket's backpressure reaches the
upstream's), and nothing is read ahead for a client that may be gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from starlette.types import Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from app.api.body import ClientGone, read_body
from app.api.server import RequestSignals, request_signals
from app.api.validation import parse_body, validate_chat
from app.auth.middleware import auth_error_headers, authenticate_headers
from app.errors import (
    GatewayError,
    InvalidRequestError,
    error_body,
)
from app.gateway import SSE_DONE, Gateway, RequestContext, drop_prefetch
from app.reliability import close_quietly
from app.telemetry.middleware import request_id_from
from app.telemetry.record import Record

log = structlog.get_logger("pareto.api")

PATH = "/v1/chat/completions"
_clock = time.perf_counter
_JSON = (b"content-type", b"application/json")
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_INTERNAL = error_body(
    "the gateway hit an internal error; it has been logged with this request's id",
    "server_error",
    "internal_error",
)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's headers as a dict (names are lower case in ASGI; the first one wins)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _DisconnectWatch:
    """Cancels the request's task when its client goes away before :meth:`done`, and sets
    ``fired``. Under ``pareto serve`` the server's protocol says so (a
    :class:`~app.api.server.RequestSignals` in the scope); elsewhere one ``receive()`` is kept
    pending for an ``http.disconnect``."""

    __slots__ = ("_finished", "_future", "_hook", "_task", "fired")

    def __init__(self, receive: Receive, hook: RequestSignals | None) -> None:
        self._finished = False
        self.fired = False
        self._task = asyncio.current_task()
        self._hook = hook
        self._future: asyncio.Future[Message] | None = None
        if hook is None:
            self._future = asyncio.ensure_future(receive())
            self._future.add_done_callback(self._received)
        elif hook.lost:
            self._lost()
        else:
            hook.callback = self._lost

    def _received(self, future: asyncio.Future[Message]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        if future.result().get("type") == "http.disconnect":
            self._lost()

    def _lost(self) -> None:
        if not self._finished and self._task is not None:
            self.fired = True
            self._task.cancel()

    def absorb(self) -> bool:
        """True when the cancellation being handled is this watch's own (now undone), so the
        request ends quietly instead of reaching the server as an error."""
        if self.fired and self._task is not None:
            self._task.uncancel()
            return True
        return False

    def done(self) -> None:
        """The answer is complete (or about to be): a disconnect no longer cancels anything."""
        if not self._finished:
            self._finished = True
            if self._hook is not None:
                self._hook.callback = None
            elif self._future is not None:
                self._future.cancel()


def _record_failure(gateway: Gateway, ctx: RequestContext, exc: BaseException) -> None:
    """Emit the record of a request that ends without a response body from the gateway."""
    if isinstance(exc, GatewayError):
        gateway.record_failure(ctx, exc.status, exc.code or exc.type)
    elif isinstance(exc, asyncio.CancelledError | ClientGone):  # the client went away
        ctx.record.client_disconnected = True
        gateway.record_failure(ctx, 499, "client_disconnected")
    elif isinstance(exc, Exception):
        gateway.record_failure(ctx, 500, "internal_error")


async def _send_error(send: Send, exc: Exception, request_id: str) -> None:
    """The OpenAI-shaped answer for ``exc`` (a GatewayError's own, or a logged 500)."""
    if isinstance(exc, GatewayError):
        status, body = exc.status, exc.to_json()
        headers = auth_error_headers(exc)
    else:
        log.error("unhandled_error", error_type=type(exc).__name__, path=PATH)
        status, body, headers = 500, _INTERNAL, []
    headers += [_JSON, (b"content-length", b"%d" % len(body))]
    headers.append((b"x-request-id", request_id.encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ChatEndpoint:
    """The ASGI callable for ``/v1/chat/completions``; app state is read per request, so the
    lifespan's objects (gateway, authenticator, guard) are picked up once they exist."""

    def __init__(self, state: Any) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = _clock()
        request_id = request_id_from(scope["headers"])
        tokens = bind_contextvars(request_id=request_id)
        try:
            if scope["method"] != "POST":
                message = f"method {scope['method']} is not allowed on {PATH}"
                err = InvalidRequestError(message, code="method_not_allowed", status=405)
                err.headers["allow"] = "POST"
                await _send_error(send, err, request_id)
                return
            await self._serve(scope, receive, send, request_id, started)
        finally:
            reset_contextvars(**tokens)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, started: float
    ) -> None:
        state = self._state
        headers = _headers(scope["headers"])
        signals = request_signals(scope)
        try:
            api_key = await authenticate_headers(
                state.authenticator,
                headers,
                PATH,
                request_id=request_id,
                started=started,
                emit=state.record_sink,
            )
        except GatewayError as exc:
            await _send_error(send, exc, request_id)
            return
        gateway: Gateway = state.gateway
        settings = gateway.settings
        ctx = RequestContext(
            request_id=request_id,
            headers=headers,
            started=started,
            record=Record(request_id=request_id, api_key_name=api_key.name if api_key else None),
            api_key=api_key,
        )
        try:
            raw = await read_body(
                receive,
                headers,
                limit=settings.max_body_bytes,
                seconds=settings.body_timeout_s,
                received=signals is not None and signals.body_received,
            )
            body = parse_body(raw)
            validate_chat(
                body,
                max_messages=settings.max_messages,
                max_content_chars=settings.max_content_chars,
            )
            stream = bool(body.get("stream"))
            ctx.record.stream = stream
            if settings.log_prompts:
                ctx.record.prompt = body.get("messages")
            gateway.prefetch_session(body, ctx)  # shares a round trip with the rate-limit check
            ticket = ctx.ticket = await state.guard.admit(api_key, body)
        except Exception as exc:
            drop_prefetch(ctx)
            _record_failure(gateway, ctx, exc)
            if not isinstance(exc, ClientGone):
                await _send_error(send, exc, request_id)
            return
        except BaseException as exc:
            drop_prefetch(ctx)
            _record_failure(gateway, ctx, exc)
            raise
        watch = _DisconnectWatch(receive, signals)
        try:
            result = await gateway.handle_chat(body, ctx)
        except BaseException as exc:
            watch.done()
            _record_failure(gateway, ctx, exc)
            await ticket.settle(ctx.record)
            if isinstance(exc, Exception):
                await _send_error(send, exc, request_id)
            elif not (isinstance(exc, asyncio.CancelledError) and watch.absorb()):
                raise
            return
        if result.stream is None:
            watch.done()
            payload = result.body or b""
            out = _raw(result.headers)
            out += [_JSON, (b"content-length", b"%d" % len(payload))]
            await send({"type": "http.response.start", "status": result.status, "headers": out})
            await send({"type": "http.response.body", "body": payload})
            await ticket.settle(ctx.record)  # after the last byte: off the caller's latency
            return
        source = (
            ticket.settle_after(result.stream, ctx.record)
            if ticket.needs_settling
            else result.stream
        )
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": result.status,
                    "headers": _SSE + _raw(result.headers),
                }
            )
            ended = False
            async for chunk in source:
                if chunk is SSE_DONE:
                    # The relay's last event: sent as the response's end, in one write instead
                    # of two (the client also wakes once, not twice). The generator finishes
                    # after it (record, budget settle: a Redis round trip), off the client's
                    # time and out of reach of a disconnect.
                    watch.done()
                    await send({"type": "http.response.body", "body": chunk})
                    ended = True
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not ended:
                watch.done()
                await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
        finally:
            watch.done()
            # A client gone while a write was pending leaves the stream suspended at a
            # chunk: close it here (shielded), so the upstream is released and the budget
            # settled now, not whenever the generator is collected.
            await close_quietly(source)
            if source is not result.stream:
                # If sending the response start failed, settle_after never started and its
                # finally never ran: release the hold here (settle runs at most once).
                await ticket.settle(ctx.record)
