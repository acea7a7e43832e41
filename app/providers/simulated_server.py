"""The simulated LLM as a standalone OpenAI-compatible server (``pareto simulate``).

A pure ASGI app (no framework) so it is never the bottleneck of a benchmark. Behaviour per
model name comes from the simulated deployments of a config file (matched by upstream model
name or deployment id); any other model name gets the default profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from app.catalog.model import Catalog
from app.errors import error_body
from app.providers.simulated import Profile, SimulatedLLM

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class SimulatorApp:
    """ASGI app serving ``POST /v1/chat/completions`` and ``GET /v1/models``."""

    def __init__(self, default: Profile, profiles: dict[str, Profile] | None = None) -> None:
        self._default = default
        self._profiles = profiles or {}
        self._llms: dict[str, SimulatedLLM] = {}
        # Requests being answered right now, and those the client dropped (GET /stats):
        # what tests read to prove a gateway released its upstream connections.
        self.active = 0
        self.disconnects = 0

    @classmethod
    def from_catalog(cls, catalog: Catalog | None, default: Profile) -> SimulatorApp:
        profiles: dict[str, Profile] = {}
        if catalog is not None:
            for dep in catalog.deployments:
                if dep.kind == "simulated":
                    profile = Profile.from_deployment(dep)
                    profile.realtime = default.realtime and profile.realtime
                    profiles.setdefault(dep.upstream_model, profile)
                    profiles[dep.id] = profile
        return cls(default, profiles)

    def _llm(self, model: str) -> SimulatedLLM:
        llm = self._llms.get(model)
        if llm is None:
            profile = self._profiles.get(model, self._default)
            llm = SimulatedLLM(profile)
            self._llms[model] = llm
        return llm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.endswith("/chat/completions") and scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await self._serve_chat(body, receive, send)
        elif path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "sim"}
                for m in sorted(self._profiles)
            ]
            await _respond(send, 200, orjson.dumps({"object": "list", "data": data}))
        elif path == "/stats":
            stats = {"active": self.active, "disconnects": self.disconnects}
            await _respond(send, 200, orjson.dumps(stats))
        elif path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
        else:
            await _respond(
                send,
                404,
                error_body("not found", "invalid_request_error"),
            )

    async def _serve_chat(self, raw: bytes, receive: Receive, send: Send) -> None:
        """Answer, and stop answering as soon as the client goes away (like a real upstream)."""
        self.active += 1
        try:
            chat = asyncio.ensure_future(self._chat(raw, send))
            gone = asyncio.ensure_future(_disconnected(receive))
            await asyncio.wait({chat, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not chat.done():
                self.disconnects += 1
                chat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chat
                return
            gone.cancel()
            await chat
        finally:
            self.active -= 1

    async def _chat(self, raw: bytes, send: Send) -> None:
        try:
            body = orjson.loads(raw)
            model = str(body.get("model") or "sim")
            messages = body["messages"]
        except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
            await _respond(
                send,
                400,
                error_body("bad request: send model and messages", "invalid_request_error"),
            )
            return
        llm = self._llm(model)
        plan = llm.plan(messages)
        if plan.hang:
            await asyncio.sleep(300)
        failure = llm.failure(plan)
        if failure is not None:
            extra = [(b"retry-after", plan.retry_after.encode())] if plan.retry_after else []
            await _respond(send, failure[0], failure[1], extra)
            return
        if plan.invalid_response:
            await _respond(send, 200, b"<html>upstream proxy error</html>")
            return
        profile = llm.profile
        start = time.perf_counter()
        if not body.get("stream"):
            out, usage = llm.completion_body(body, model, plan)
            await _pause(start + llm.decode_delay(usage.completion_tokens, plan))
            await _respond(send, 200, orjson.dumps(out))
            return
        chunks, _usage, usage_chunk = llm.chunks(body, model, plan)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        ttft = profile.ttft_s + plan.extra_ttft_s if profile.realtime else 0.0
        emitted = 0
        for data, is_content, _finish in chunks:
            if plan.cut_after is not None and emitted >= plan.cut_after:
                # An abrupt end: the response is never completed, the connection drops.
                raise ConnectionAbortedError("simulated mid-stream cut")
            if profile.realtime and is_content:
                await _pause(start + ttft + emitted / profile.decode_tps)
            if is_content:
                emitted += 1
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + data + b"\n\n",
                    "more_body": True,
                }
            )
        options = body.get("stream_options") or {}
        tail = b""
        if isinstance(options, dict) and options.get("include_usage"):
            tail = b"data: " + usage_chunk + b"\n\n"
        await send(
            {"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False}
        )


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _pause(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0.0005:
        await asyncio.sleep(delay)


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = _JSON + extra if extra else _JSON
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
