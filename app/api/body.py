"""Reading a request body off ASGI ``receive``, for every endpoint that takes one.

Over the size limit → 413 before reading it all (the declared length is checked first);
slower than ``PARETO_BODY_TIMEOUT_S`` → 408; the client gone → :class:`ClientGone`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import Receive

from app.errors import BodyTooLargeError, RequestTimeoutError


class ClientGone(Exception):
    """The client disconnected before the request body arrived."""


async def _read(receive: Receive, headers: Mapping[str, str], limit: int, setting: str) -> bytes:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(
            f"the request body is {declared} bytes; this gateway accepts at most {limit} "
            f"({setting})"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(
                f"the request body is over {limit} bytes, the most this gateway accepts ({setting})"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(
    receive: Receive,
    headers: Mapping[str, str],
    *,
    limit: int,
    seconds: float,
    setting: str = "PARETO_MAX_BODY_BYTES",
    received: bool = False,
) -> bytes:
    """The raw body, at most ``limit`` bytes (``setting`` names what sets it, for the 413),
    within ``seconds`` (408). ``received``: the server already has all of it
    (:class:`~app.api.server.RequestSignals`), so nothing can be slow and no timer is armed."""
    if received:
        return await _read(receive, headers, limit, setting)
    try:
        async with asyncio.timeout(seconds):
            return await _read(receive, headers, limit, setting)
    except TimeoutError as exc:
        raise RequestTimeoutError(
            f"the request body did not arrive within {seconds:g} s (PARETO_BODY_TIMEOUT_S); "
            "send the whole request promptly"
        ) from exc
