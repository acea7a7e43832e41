"""Server-sent events out: write what is ready in one go, never wait to batch.

:func:`coalesce` pulls a response stream in its own task and hands the server everything
that has arrived by the time the previous write finished, joined into one ``send``. A paced
upstream (one token per network read) still goes out chunk by chunk with no added delay;
a fast one no longer costs one socket write per token. Backpressure is kept: the queue is
bounded, so a slow client slows the pump (and that wait is what telemetry counts as the
client's). Cancelling the consumer (client gone) cancels the pump, whose ``finally`` closes
the source chain, so upstream connections are released and budgets settled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

_QUEUE_ITEMS = 64
_MAX_WRITE_BYTES = 64 * 1024


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def _pump(source: AsyncIterator[bytes], queue: asyncio.Queue[bytes | _End]) -> None:
    try:
        async for chunk in source:
            await queue.put(chunk)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        await queue.put(_End(exc))
    else:
        await queue.put(_End())
    finally:
        aclose: Any = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # mark as retrieved; the consumer already re-raised what mattered


async def coalesce(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The same bytes as ``source``, with chunks that are ready at once written together."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(_QUEUE_ITEMS)
    task = asyncio.ensure_future(_pump(source, queue))
    task.add_done_callback(_retrieve)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            parts = [item]
            size = len(item)
            end: _End | None = None
            while size < _MAX_WRITE_BYTES and not queue.empty():
                more = queue.get_nowait()
                if isinstance(more, _End):
                    end = more
                    break
                parts.append(more)
                size += len(more)
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            if end is not None:
                if end.error is not None:
                    raise end.error
                return
    finally:
        if not task.done():
            # Not awaited: the consumer may be inside a cancelled scope; the pump's own
            # ``finally`` closes the source chain (upstream released, budget settled).
            task.cancel()
