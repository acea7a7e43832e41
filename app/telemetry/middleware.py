"""Pure-ASGI middleware: the request's id and arrival time, bound before anything else runs.

It picks the request id (a safe incoming ``x-request-id`` is honoured, otherwise a new one),
stores it and the arrival time in ``scope["state"]`` (``request.state.request_id`` /
``request.state.started``), binds it into structlog's contextvars so every log line of the
request carries it, and puts ``x-request-id`` on every response, errors included.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_HEADER = b"x-request-id"


def request_id_from(headers: Any) -> str:
    """A safe incoming id (raw ASGI header list), or a fresh one."""
    for name, value in headers:
        if name == _HEADER:
            if _SAFE_ID.match(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Request id + arrival time for every HTTP request; nothing per-chunk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id_from(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["started"] = started
        raw_id = rid.encode("ascii")
        tokens = bind_contextvars(request_id=rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name == _HEADER for name, _ in headers):
                    headers.append((_HEADER, raw_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_contextvars(**tokens)
