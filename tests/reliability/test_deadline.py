"""A started stream's total timeout: one timer per stream, not one per chunk."""

from __future__ import annotations

import asyncio

import pytest

from app.reliability.deadline import StreamDeadline


async def test_a_wait_in_progress_at_the_deadline_times_out() -> None:
    cut = StreamDeadline(0.02)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await cut.wait(never)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our cancellation was taken back
    await asyncio.sleep(0)  # and the task runs on normally
    cut.close()


async def test_waits_before_the_deadline_pass_and_a_late_one_raises_at_once() -> None:
    cut = StreamDeadline(0.05)

    async def value(v: int) -> int:
        return v

    assert [await cut.wait(value(i)) for i in range(3)] == [0, 1, 2]
    await asyncio.sleep(0.08)  # the deadline passes between waits (a slow client)
    pending = value(3)
    with pytest.raises(TimeoutError):
        await cut.wait(pending)  # closed, not left un-awaited (warnings are errors here)
    cut.close()


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    async def relay() -> None:
        cut = StreamDeadline(10)
        try:
            await cut.wait(asyncio.sleep(10))
        finally:
            cut.close()

    task = asyncio.ensure_future(relay())
    await asyncio.sleep(0.01)
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_at_the_deadline_is_not_swallowed() -> None:
    upstream: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def relay() -> None:
        cut = StreamDeadline(0.02)
        try:
            await cut.wait(upstream)
        finally:
            cut.close()

    task = asyncio.ensure_future(relay())
    # When the deadline cancels the wait, the client goes away too, before the task resumes.
    upstream.add_done_callback(lambda _: task.cancel())
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_closed_deadline_never_fires() -> None:
    cut = StreamDeadline(0.01)
    cut.close()
    await asyncio.sleep(0.03)
    assert await cut.wait(asyncio.sleep(0, result="ok")) == "ok"
