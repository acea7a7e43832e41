"""A TCP proxy in front of the shared Redis that fails one command the way networks do.

The gateway's hot-path client cannot tell these apart from a healthy Redis until it is too
late, which is the point: a command is spotted by a needle in what the client sends (a
script's SHA1, which ``EVALSHA`` carries), and then

- ``late``: it reaches Redis and is applied; the reply comes ``late_s`` later (after the
  client's deadline),
- ``cut``: it reaches Redis and is applied; the client's connection drops before the reply,
- ``lose``: it never reaches Redis; the client's connection drops,
- ``freeze``: it reaches Redis and is answered; from then on nothing any client sends
  reaches Redis (a worker cut off for good, as if it had died).

Each rule fires ``times`` times. Everything else passes through untouched, and what the
clients send is kept in ``sent``, one item per read (commands written together arrive
together on loopback: that is how a test sees them share a round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Rule:
    needle: bytes
    mode: str
    times: int


class RedisProxy:
    """``async with RedisProxy() as proxy``: point a client at ``proxy.url``."""

    def __init__(self, target_port: int = 6379, late_s: float = 0.5) -> None:
        self._target_port = target_port
        self.late_s = late_s
        self._rules: list[_Rule] = []
        self._frozen = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closers: set[Callable[[], None]] = set()
        self.fired: list[str] = []  # the modes that fired, in order
        self.sent: list[bytes] = []  # what clients sent, one item per read
        self.url = ""

    def on(self, needle: str | bytes, mode: str, times: int = 1) -> None:
        """Fail the next ``times`` commands whose bytes contain ``needle``."""
        assert mode in {"late", "cut", "lose", "freeze"}
        raw = needle.encode() if isinstance(needle, str) else needle
        self._rules.append(_Rule(raw, mode, times))

    def _match(self, data: bytes) -> str | None:
        for rule in self._rules:
            if rule.times > 0 and rule.needle in data:
                rule.times -= 1
                self.fired.append(rule.mode)
                return rule.mode
        return None

    async def __aenter__(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for close in list(self._closers):
            close()  # each connection's handler then ends on its own
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self._target_port)

        def close() -> None:
            client_w.transport.abort()
            server_w.transport.abort()

        self._closers.add(close)
        late = asyncio.Event()  # the next reply is to be held back
        cut = asyncio.Event()  # the client's side was dropped after a command went on

        async def up() -> None:
            while data := await client_r.read(65536):
                self.sent.append(data)
                if self._frozen:
                    continue
                mode = self._match(data)
                if mode == "lose":
                    return
                if mode == "late":
                    late.set()
                server_w.write(data)
                await server_w.drain()
                if mode == "cut":
                    cut.set()
                    return
                if mode == "freeze":
                    self._frozen = True

        async def down() -> None:
            while data := await server_r.read(65536):
                if late.is_set():
                    late.clear()
                    await asyncio.sleep(self.late_s)
                if cut.is_set():
                    return  # Redis answered the command it got: it was applied
                client_w.write(data)

        sending = asyncio.ensure_future(up())
        receiving = asyncio.ensure_future(down())
        try:
            await asyncio.wait([sending, receiving], return_when=asyncio.FIRST_COMPLETED)
            client_w.transport.abort()
            if cut.is_set():
                await asyncio.wait([receiving], timeout=2.0)
        finally:
            sending.cancel()
            receiving.cancel()
            await asyncio.gather(sending, receiving, return_exceptions=True)
            server_w.close()
            client_w.transport.abort()
            with contextlib.suppress(OSError):
                await server_w.wait_closed()
            self._closers.discard(close)
            self._tasks.discard(task)
