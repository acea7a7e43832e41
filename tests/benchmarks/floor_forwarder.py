"""The floor for a Python gateway on this stack: an ASGI app that only forwards.

    FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1 FLOOR_PACED_UPSTREAM=... python -m uvicorn \\
        tests.benchmarks.floor_forwarder:app --loop uvloop --http httptools --workers 2

It does what any gateway must and nothing else: read the client's body, POST it to one
upstream through the gateway's own HTTP client (``app/providers/http1.py``), and send back
the answer — whole for JSON, each network read as it arrives for streams (with ``model``
rewritten, since the benchmark names a policy). No routing, auth, limits, sessions, telemetry
or validation. ``bench_gateway --floor`` runs it beside the gateway in the same run, so what
the gateway adds above this floor is its features, and what the floor adds above direct is
uvicorn, the extra hop and CPython.
"""

from __future__ import annotations

import os
from typing import Any

from app.providers.http import Timeouts
from app.providers.http1 import Http1Backend

_TIMEOUTS = Timeouts(connect=5.0, read=30.0)
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream")]
_state: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    backend = _state.get("backend")
    if backend is None:
        backend = _state["backend"] = Http1Backend()
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(parts)
    paced = b'"model":"bench-paced"' in body  # bench_gateway's paced scenarios
    upstream = os.environ["FLOOR_PACED_UPSTREAM" if paced else "FLOOR_UPSTREAM"]
    url = upstream + "/chat/completions"
    for model in (b'"model":"auto"', b'"model":"bench-paced"'):
        body = body.replace(model, b'"model":"bench"', 1)
    headers = {"content-type": "application/json"}
    if b'"stream":true' not in body:
        r = await backend.post(url, body, headers, _TIMEOUTS)
        out = [*_JSON, (b"content-length", b"%d" % len(r.body))]
        await send({"type": "http.response.start", "status": r.status, "headers": out})
        await send({"type": "http.response.body", "body": r.body})
        return
    async with backend.stream(url, body, headers, _TIMEOUTS) as stream:
        await send({"type": "http.response.start", "status": stream.status, "headers": _SSE})
        async for chunk in stream.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
