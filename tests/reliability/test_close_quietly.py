"""close_quietly: closes an unfinished upstream iterator under a shield, skips finished ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from app.reliability import close_quietly


async def _source(closed: list[bool]) -> AsyncIterator[int]:
    try:
        yield 1
        yield 2
    finally:
        await asyncio.sleep(0)  # a close that awaits (as an upstream connection's does)
        closed.append(True)


async def test_a_suspended_generator_is_closed_even_in_a_cancelled_task() -> None:
    closed: list[bool] = []
    source = _source(closed)
    assert await source.__anext__() == 1

    async def cleanup() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await close_quietly(source)

    task = asyncio.ensure_future(cleanup())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]


async def test_a_finished_generator_costs_no_cancel_scope(monkeypatch: Any) -> None:
    # Every stream that ends normally passes three finished generators here: no shield
    # (anyio's cancel scope is ~12 µs each) for something with nothing to close.
    closed: list[bool] = []
    source = _source(closed)
    assert [x async for x in source] == [1, 2]

    def no_scope(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cancel scope was opened for a finished generator")

    monkeypatch.setattr(anyio, "CancelScope", no_scope)
    await close_quietly(source)
    assert closed == [True]
