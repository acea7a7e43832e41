"""One multiplexed Redis connection: packed commands out, hiredis-parsed replies in, in order.

Redis answers the commands of a connection in the order it received them, so a connection is
a FIFO of waiters: :meth:`Connection.send` appends one and buffers the command; the replies
that :meth:`Connection.data_received` parses resolve the waiters from the front. Commands
sent in the same event-loop iteration leave in one transport write (one ``call_soon``
flush), which is what pipelines concurrent requests for free.

Deadlines cost one timer per connection, not one per call: every call has the same timeout,
so the front waiter always has the earliest deadline, and the timer is armed for it. A
waiter whose deadline passes gets :class:`redis.exceptions.TimeoutError` but stays in the
FIFO, so the replies that follow still meet their own waiters; its late reply is dropped.
While only such waiters are queued the timer waits for the dead-peer check below, so a
call that arrives then re-arms it for its own, earlier deadline.
When the front waiter has waited ``dead_after_s`` the peer is taken for dead and the
connection is aborted (a paused or partitioned server must not grow the FIFO for ever).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def reply_error(message: str) -> ResponseError:
    """An error reply as redis-py would raise it (NOSCRIPT gets its own class)."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Waiter:
    """A caller waiting for ``count`` replies (``replies is None``: one, returned bare)."""

    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, future: asyncio.Future[Any], deadline: float, count: int | None) -> None:
        self.future = future
        self.deadline = deadline
        self.count = count
        self.replies: list[Any] | None = None if count is None else []


class Connection(asyncio.Protocol):
    """One TCP (or Unix) connection to Redis, shared by every task of its event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout_s: float,
        dead_after_s: float,
        on_lost: Callable[[Connection], None],
    ) -> None:
        self.loop = loop
        self._timeout_s = timeout_s
        self._grace_s = max(0.0, dead_after_s - timeout_s)
        self._on_lost = on_lost
        self._reader = hiredis.Reader(replyError=reply_error)
        self._waiters: deque[_Waiter] = deque()
        self._out: list[bytes] = []
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._lost = loop.create_future()

    # -- sending ----------------------------------------------------------------------------
    def send(self, payload: bytes, count: int | None = None) -> asyncio.Future[Any]:
        """Queue packed command(s); the future gets the reply (``count``: a list of replies).

        Raises :class:`redis.exceptions.ConnectionError` at once when the connection is gone.
        """
        if self._transport is None:
            self._on_lost(self)  # so the client opens a new one next time
            raise RedisConnectionError("connection to Redis closed")
        loop = self.loop
        future = loop.create_future()
        deadline = loop.time() + self._timeout_s
        self._waiters.append(_Waiter(future, deadline, count))
        self._out.append(payload)
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        timer = self._timer
        if timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        elif deadline < timer.when():
            # Armed for the dead-peer check of a timed-out waiter: later than this deadline.
            timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
        return future

    def _flush(self) -> None:
        self._flushing = False
        out = self._out
        if self._transport is None or not out:
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # -- receiving --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(f"unreadable reply from Redis: {exc}")
                return
            if reply is False:
                return
            if not waiters:
                self.abort("Redis sent a reply nobody asked for")
                return
            waiter = waiters[0]
            replies = waiter.replies
            if replies is None:
                waiters.popleft()
                future = waiter.future
                if future.done():
                    continue  # timed out or cancelled: the late reply is dropped
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
            else:
                replies.append(reply)
                if len(replies) == waiter.count:
                    waiters.popleft()
                    if not waiter.future.done():
                        waiter.future.set_result(replies)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost fails whoever still waits

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out.clear()
        why = f": {exc}" if exc is not None else ""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.future.done():
                error = RedisConnectionError(f"connection to Redis lost{why}")
                error.__cause__ = exc  # e.g. a TLS alert: the client explains it on connect
                waiter.future.set_exception(error)
        if not self._lost.done():
            self._lost.set_result(None)
        self._on_lost(self)

    # -- deadlines --------------------------------------------------------------------------
    def _expire(self) -> None:
        self._timer = None
        waiters = self._waiters
        if not waiters:
            return
        now = self.loop.time()
        next_at: float | None = None
        for waiter in waiters:
            if waiter.deadline > now:
                next_at = waiter.deadline
                break
            if not waiter.future.done():
                waiter.future.set_exception(
                    RedisTimeoutError(f"Redis did not answer within {self._timeout_s} s")
                )
        head = waiters[0]
        if head.deadline <= now:
            dead_at = head.deadline + self._grace_s
            if now >= dead_at:
                self.abort(
                    f"Redis did not answer for {self._timeout_s + self._grace_s:.3g} s; "
                    "connection dropped"
                )
                return
            next_at = dead_at if next_at is None else min(next_at, dead_at)
        if next_at is not None:
            self._timer = self.loop.call_at(next_at, self._expire)

    # -- closing ----------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def abort(self, reason: str) -> None:
        """Drop the connection now; every waiter fails with ConnectionError(``reason``)."""
        transport = self._transport
        if transport is None:
            return
        # connection_lost runs on a later loop iteration: fail the waiters with the reason
        # now, and stop taking commands, so the client opens a new connection at once.
        self._transport = None
        transport.abort()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(RedisConnectionError(reason))
        self._on_lost(self)

    async def aclose(self) -> None:
        """Close after the buffered commands are written; wait until the transport is gone."""
        self._flush()
        if self._transport is not None:
            self._transport.close()
        await asyncio.shield(self._lost)
