"""The HTTP server's own defences against slow and oversized clients (``pareto serve``).

uvicorn's httptools protocol limits neither the size of a request's headers nor the time a
client may take to send them (llhttp accepts any header size; uvicorn's keep-alive timer only
runs *between* requests). :class:`HardenedHttpToolsProtocol` adds both, before the app sees
anything:

- headers (request line included) over ``PARETO_MAX_HEADER_BYTES`` → ``431`` and close;
- headers not complete within ``PARETO_HEADER_TIMEOUT_S`` of the connection opening (or of
  the request's first byte on a kept-alive connection) → ``408`` and close (for headers
  pipelined behind a request still being answered, after that answer is complete).

It also sends a response's status line and headers in the same socket write as the first
body bytes (:class:`_HeadWithBody`): uvicorn writes them separately, which costs a second
syscall and, worse, a second wake-up of the client per response.

And it tells a request's app what only the server sees (:class:`RequestSignals`, in the
scope's ``extensions``): that the client went away, so the app need not keep a
``receive()`` pending for that (a task per request, and a cancelled one to step through when
the answer is done); and that the whole body has arrived, so reading it cannot wait and
needs no timer.

A slow *body* is the app's to time out (``read_body`` in :mod:`app.api.body`, 408).
Answers are OpenAI-shaped JSON like every other error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.errors import error_body

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


SIGNALS = "pareto.signals"


class RequestSignals:
    """What the server's protocol knows about one request, for its app.

    ``callback``: set by the app while it works on the request (and cleared when the answer is
    complete); called once when the connection is lost before the response completed. ``lost``
    stays True afterwards, for an app that looks only later. ``body_received``: the server has
    the whole body, so ``receive()`` returns it without waiting.
    """

    __slots__ = ("body_received", "callback", "lost")

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None
        self.lost = False
        self.body_received = False

    def fire(self) -> None:
        self.lost = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


def request_signals(scope: Any) -> RequestSignals | None:
    """The request's signals, if its server gives them (ASGI extension values are dicts)."""
    hook = scope.get("extensions", {}).get(SIGNALS, {}).get("signals")
    return hook if isinstance(hook, RequestSignals) else None


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request we already answered."""


def _limits(config: Config) -> tuple[int, float]:
    """(max header bytes, header timeout), read from the settings once per process."""
    cached: tuple[int, float] | None = getattr(config, "_pareto_server_limits", None)
    if cached is None:
        from app.settings import load_settings

        settings = load_settings()
        cached = (settings.max_header_bytes, settings.header_timeout_s)
        config._pareto_server_limits = cached  # type: ignore[attr-defined]
    return cached


class _HeadWithBody:
    """The transport as one response cycle sees it: its first write (uvicorn's status line
    and headers) is held and sent together with the next one (the first body bytes; uvicorn
    writes the body even when it is empty). Everything else goes to the real transport;
    ``close`` sends a held head first."""

    __slots__ = ("_head", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            if data.startswith(b"HTTP/1.1 100 "):  # "100 Continue": the client waits for it
                self._transport.write(data)
                return
            self._started = True
            self._head = data
            return
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit and a header deadline."""

    def __init__(
        self,
        config: Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_header_bytes, self._header_timeout_s = _limits(config)
        self._header_bytes = 0
        self._counting = True  # between requests and while a request's headers arrive
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False  # from the connection's or a request's first byte to its headers
        self._header_since = 0.0
        self._rejected = False
        # The cycle whose app is running: with a request pipelined behind it, ``self.cycle``
        # is that later one, and uvicorn tells only ``self.cycle`` of a lost connection.
        self._serving: RequestResponseCycle | None = None
        self._deferred: tuple[int, str] | None = None  # a rejection waiting for an answer

    # -- header deadline ------------------------------------------------------------------
    # One timer per connection, not one armed and cancelled per request (5.6 us on uvloop):
    # a request's headers starting only note the time; when the timer fires it rejects headers
    # still incomplete past their deadline, re-arms for headers that started later, and
    # lapses when no headers are arriving (the next request's first byte arms it again).
    def _arm(self) -> None:
        if not self._in_headers:  # a connection's first request: due from the connect
            self._in_headers = True
            self._header_since = self.loop.time()
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._too_slow)

    def _cancel_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self._in_headers or self._rejected or self.transport.is_closing():
            return
        left = self._header_since + self._header_timeout_s - self.loop.time()
        if left > 0:
            self._header_timer = self.loop.call_later(left, self._too_slow)
            return
        self._reject(
            408,
            f"the request's headers did not arrive within {self._header_timeout_s:g} s; "
            "send the whole request promptly",
        )

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` and close; nothing more is read. For a request pipelined behind
        one still being answered (or queued), the answer waits for theirs
        (:meth:`on_response_complete`): written now, it would land inside theirs."""
        self._cancel_timer()
        self._rejected = True
        if self.cycle is not None and not self.cycle.response_complete:
            self._deferred = (status, message)
            return
        self._send_rejection(status, message)

    def _send_rejection(self, status: int, message: str) -> None:
        body = error_body(message, "invalid_request_error", "request_rejected")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body)) + body
        )
        # Lingering close: stop writing, drain what the client still sends for a moment, then
        # close. Closing with unread input would reset the connection and lose the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)
        else:
            self.transport.close()

    # -- protocol hooks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._serving = cycle
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        cycle, serving = self.cycle, self._serving
        super().connection_lost(exc)
        if serving is not None and serving is not cycle and not serving.response_complete:
            serving.disconnected = True  # what uvicorn does for self.cycle only
            serving.message_event.set()
            hook = request_signals(serving.scope)
            if hook is not None:
                hook.fire()
        if cycle is not None and not cycle.response_complete:
            hook = request_signals(cycle.scope)
            if hook is not None:
                hook.fire()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a parser error, which is also what _Rejected raised from a
        # parser callback becomes (httptools wraps it): that request has its answer already
        # (or has it waiting for the answer in flight), so no 400 is written over it.
        if not self._rejected:
            super().send_400_response(msg)

    def _too_large(self) -> None:
        self._reject(
            431,
            f"the request's headers are over {self._max_header_bytes} bytes, the most this "
            "gateway accepts (PARETO_MAX_HEADER_BYTES)",
        )

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # answered already; discard until the lingering close
        # _in_headers too: a pipelined request's headers arriving while an earlier request
        # is answered count as well (_counting is off then), or they would pile up unbounded.
        if self._counting or self._in_headers:
            self._header_bytes += len(data)
        try:
            super().data_received(data)
        except _Rejected:
            return
        # Headers still incomplete after this many bytes: they are at least this large.
        if (
            (self._counting or self._in_headers)
            and self._header_bytes > self._max_header_bytes
            and not self._rejected
            and not self.transport.is_closing()
        ):
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        # Whole headers may arrive in one read: measure what the parser saw.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self._max_header_bytes:
            self._too_large()
            raise _Rejected
        self._counting = False
        self._header_bytes = 0
        self._in_headers = False
        self.scope["extensions"] = {SIGNALS: {"signals": RequestSignals()}}
        super().on_headers_complete()
        if self.cycle.scope["method"] != "HEAD":  # uvicorn writes no body for HEAD
            self.cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        signals = request_signals(self.scope)
        if signals is not None:
            signals.body_received = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._counting = True  # the next request's headers start now (keep-alive)
        self._header_bytes = 0
        deferred = self._deferred
        if (
            deferred is not None
            and not self.transport.is_closing()
            and (self.cycle is None or self.cycle.response_complete)  # no other answer due
        ):
            self._deferred = None
            self._send_rejection(*deferred)
