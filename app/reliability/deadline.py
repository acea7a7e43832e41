"""One timer per stream for a started stream's total timeout.

``asyncio.timeout`` around each upstream wait arms and cancels a timer and looks up the
running task every time: ~8 µs per chunk on uvloop, more than the rest of relaying that
chunk, paid on every token of a paced stream. :class:`StreamDeadline` arms one timer for
the whole stream. When it fires during a wait, the task is cancelled and :meth:`wait`
raises ``TimeoutError`` instead (telling our cancellation from anyone else's with
``Task.uncancel``, as ``asyncio.timeout`` does); when it fires between waits (a slow
client), the next wait raises at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class StreamDeadline:
    """Cuts the waits of the task that creates it at ``seconds`` from now.

    A stream is iterated by one task from start to end (the response's), so the task is
    looked up once. Call :meth:`close` when the stream ends.
    """

    __slots__ = ("_handle", "_task", "_waiting", "_expired", "_cancelling")

    def __init__(self, seconds: float) -> None:
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(max(0.0, seconds), self._expire)
        self._waiting = False
        self._expired = False
        self._cancelling = -1  # the task's cancel count before we cancelled it; -1 = we did not

    def _expire(self) -> None:
        self._expired = True
        task = self._task
        if self._waiting and task is not None:
            self._cancelling = task.cancelling()
            task.cancel()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or ``TimeoutError`` if the deadline passes first."""
        if self._expired:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # never awaited: no "was never awaited" warning
            raise TimeoutError
        self._waiting = True
        try:
            result = await awaitable
        except asyncio.CancelledError:
            self._waiting = False
            if self._withdraw():
                raise TimeoutError from None
            raise
        except BaseException:
            self._waiting = False
            self._withdraw()
            raise
        self._waiting = False
        if self._cancelling >= 0:
            self._withdraw()  # the wait swallowed our cancellation: take it back anyway
        return result

    def _withdraw(self) -> bool:
        """Take our cancellation back, if we made one; True when no one else asked the task
        to cancel (so the CancelledError was ours alone)."""
        if self._cancelling < 0 or self._task is None:
            return False
        ours = self._task.uncancel() <= self._cancelling
        self._cancelling = -1
        return ours

    def close(self) -> None:
        self._handle.cancel()
