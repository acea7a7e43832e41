"""Stream coalescing: same bytes, fewer writes when chunks are ready, cleanup on disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.api.sse import coalesce


async def burst(n: int, closed: list[bool]) -> AsyncIterator[bytes]:
    try:
        for i in range(n):
            yield f"data: {i}\n\n".encode()
    finally:
        closed.append(True)


async def paced(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(0.005)
        yield f"data: {i}\n\n".encode()


async def test_ready_chunks_are_joined_and_bytes_unchanged() -> None:
    closed: list[bool] = []
    writes = [w async for w in coalesce(burst(200, closed))]
    assert b"".join(writes) == b"".join(f"data: {i}\n\n".encode() for i in range(200))
    assert len(writes) < 20  # 200 ready chunks, a handful of writes
    assert closed == [True]


async def test_paced_stream_is_not_delayed_or_batched() -> None:
    writes = [w async for w in coalesce(paced(5))]
    assert writes == [f"data: {i}\n\n".encode() for i in range(5)]


async def test_consumer_leaving_closes_the_source() -> None:
    closed: list[bool] = []

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                await asyncio.sleep(0.001)
                yield b"data: x\n\n"
        finally:
            closed.append(True)

    stream = coalesce(endless())
    assert await stream.__anext__() == b"data: x\n\n"
    await stream.aclose()  # the client went away
    for _ in range(20):
        await asyncio.sleep(0.001)
    assert closed == [True]


async def test_source_error_reaches_the_consumer_after_what_came_before() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise RuntimeError("broken chain")

    got = []
    with pytest.raises(RuntimeError, match="broken chain"):
        async for w in coalesce(failing()):
            got.append(w)
    assert got == [b"data: 1\n\n"]
