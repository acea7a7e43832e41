"""SSE in: an OpenAI-compatible chunk stream cut into :class:`StreamChunk`\\ s, one per read.

The gateway forwards an upstream's events as they are, so the per-token work is kept to a
few byte scans per network read (each a C loop; on a paced stream a read is one event, so
what counts there is the number of calls, not bytes). :meth:`ChunkReader.feed` takes one
network read and returns what it completed:

* a run of ordinary content events (the bulk of a stream once the first token is out) is
  checked with a few scans over the whole run and forwarded as one slice, never split;
* the events the gateway must read are handled one by one: those before the first token (to
  find it), the one that carries usage (JSON-parsed: billing), ``[DONE]``, a mid-stream
  ``{"error"…}`` event, and anything not framed as one ``data: `` line (``\\r\\n`` line ends,
  comments, ``event:`` fields, multi-line data), which is re-framed as ``data: …\\n\\n``;
* the usage event with no choices becomes a chunk of its own, so the relay can hide it.

Finish reasons are not read: nothing in the relay uses them, and the scan for
``"finish_reason":"`` was the dearest of all (every OpenAI event holds
``"finish_reason":null``, so the needle half-matches in each one). The finish event is
forwarded like any other.

An event split across reads waits in the reader until its blank line arrives.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import UpstreamError, UpstreamInvalidResponseError, UpstreamServerError
from app.providers.base import StreamChunk, Usage, upstream_message

_SEP = b"\n\n"
_DATA = b"data: "
_FRAMING = len(_DATA) + len(_SEP)
_USAGE = b'"usage":{'
# The same key as written by an upstream that spaces its JSON (e.g. Python's json.dumps).
_USAGE_SPACED = b'"usage": {'
_ERROR = b'{"error"'
_DONE = b"[DONE]"
# Inside a plain run every event starts with "data: ", so an error event is looked for with
# that prefix: a longer needle is a faster scan (bytes.find skips by its length).
_ERROR_EVENT = _DATA + _ERROR
# A plain run is made of events that are each one line "data: {…}" (compact JSON objects),
# so it starts with _PLAIN_START and has one _PLAIN_NEXT per event after the first, and
# exactly two newlines per event. "data: [DONE]" fails that shape (it is not an object), so
# it needs no scan of its own; a usage or error event has the shape and needs one.
_PLAIN_START = b'data: {"'
_PLAIN_NEXT = _SEP + _PLAIN_START
# Any of these in a run sends its event down the one-by-one path ("\r" only when the read
# holds one: a lone "\r" ends a line in SSE).
_MARKERS = (_USAGE, _USAGE_SPACED, _ERROR_EVENT)
_MARKERS_CR = (*_MARKERS, b"\r")


class _Group:
    """The events of one read that go out together as one chunk."""

    __slots__ = ("parts", "content", "usage", "content_bytes")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.content = False
        self.usage: Usage | None = None
        self.content_bytes = 0

    def flush(self, out: list[StreamChunk]) -> None:
        """Close the group: its events become one chunk in ``out`` (nothing if it is empty)."""
        parts = self.parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        out.append(StreamChunk(data, self.content, self.usage, False, None, self.content_bytes))
        self.parts = []
        self.content = False
        self.usage = None
        self.content_bytes = 0


def _data_field(event: bytes) -> bytes | None:
    """The data of an event that is not one ``data: `` line (SSE rules), or None if it has none."""
    lines = [
        line[5:] for line in event.replace(b"\r", b"").split(b"\n") if line.startswith(b"data:")
    ]
    if not lines:
        return None
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)


class ChunkReader:
    """One stream's parsing state: the unfinished event carried over, the first token, [DONE].

    ``feed`` never raises: a mid-stream error event or an unreadable event ends the chunks it
    returns and is left in :attr:`error`, so what came before it in the same read still
    reaches the client (as it would have, read by read) before the stream fails.
    """

    __slots__ = ("_deployment", "_rest", "_slow_until", "_markers", "started", "done", "error")

    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._rest = b""
        self._markers: tuple[bytes, ...] = _MARKERS
        self._slow_until = 0  # a run that failed the fast check is read event by event
        self.started = False
        self.done = False
        self.error: UpstreamError | None = None

    def feed(self, raw: bytes) -> list[StreamChunk]:
        """The chunks made of the events this read completed (possibly none)."""
        buffer = self._rest + raw if self._rest else raw
        cr = buffer.find(b"\r") >= 0
        if cr:
            # Whole-buffer replace: a "\r" ending one read and its "\n" starting the next are
            # joined here first, since an unfinished event is always carried over.
            buffer = buffer.replace(b"\r\n", b"\n")
            cr = buffer.find(b"\r") >= 0  # a lone "\r" left: its events go one by one
        end = buffer.rfind(_SEP) + 2  # past the last complete event
        if end < 2:
            self._rest = buffer
            return []
        self._slow_until = 0
        self._markers = _MARKERS_CR if cr else _MARKERS
        if self.started and not cr:
            # The common read: nothing but content events. Checked on the run as one object
            # with plain calls (no start/end arguments): on a paced stream the run is one
            # ~250-byte event, where each call's own cost is most of the scan's.
            run = buffer if end == len(buffer) else buffer[:end]
            if (
                run.find(_USAGE) < 0
                and run.find(_USAGE_SPACED) < 0
                and run.find(_ERROR_EVENT) < 0
                and run.startswith(_PLAIN_START)
            ):
                # One "data: {…}" line per event ([DONE] fails). A run of one event (every
                # read of a paced stream) has no newline before its blank line.
                first_nl = run.find(b"\n")
                if first_nl == end - 2:
                    n = 1
                else:
                    n = run.count(_PLAIN_NEXT) + 1
                    if run.count(b"\n") != 2 * n:
                        n = 0
                if n:
                    self._rest = buffer[end:]
                    return [StreamChunk(run, True, None, False, None, end - n * _FRAMING)]
        out: list[StreamChunk] = []
        group = _Group()
        pos = 0
        while pos < end:
            if self.started and pos >= self._slow_until:
                stop, n = self._plain_run(buffer, pos, end)
                if n:
                    group.parts.append(buffer[pos:stop])
                    group.content = True
                    group.content_bytes += stop - pos - n * _FRAMING
                    pos = stop
                    continue
            cut = buffer.find(_SEP, pos, end)
            if cut < 0:
                break  # a stray "\n" before the last blank line: the next event's start
            pos = self._one_event(buffer, pos, cut, group, out)
            if pos < 0:
                group.flush(out)
                return out  # [DONE] or an error: nothing after it matters
        group.flush(out)
        self._rest = buffer[pos:]
        return out

    def _plain_run(self, buffer: bytes, pos: int, end: int) -> tuple[int, int]:
        """Where the run of plain content events from ``pos`` ends, and how many events it
        holds (0: the event at ``pos`` must be read on its own)."""
        special = end
        for marker in self._markers:
            at = buffer.find(marker, pos, special)
            if at >= 0:
                special = at
        if special < end:
            cut = buffer.rfind(_SEP, pos, special)
            if cut < 0:
                return pos, 0
            stop = cut + 2
        else:
            stop = end
        n = buffer.count(_PLAIN_NEXT, pos, stop) + 1
        # One "data: {…}" line per event: no other line, no extra blank line.
        if buffer.startswith(_PLAIN_START, pos) and buffer.count(b"\n", pos, stop) == 2 * n:
            return stop, n
        self._slow_until = stop  # not plain: read it event by event
        return pos, 0

    def _one_event(
        self, buffer: bytes, pos: int, cut: int, group: _Group, out: list[StreamChunk]
    ) -> int:
        """Read the event ``buffer[pos:cut]`` into ``group`` (or ``out``); the next event's
        position, or -1 when the stream ended here ([DONE] or :attr:`error`)."""
        nxt = cut + 2
        if (
            buffer.startswith(_DATA, pos)
            and buffer.find(b"\n", pos, cut) < 0
            and buffer.find(b"\r", pos, cut) < 0
        ):
            framed = buffer[pos:nxt]
            payload = buffer[pos + 6 : cut].strip()
        else:
            data = _data_field(buffer[pos:cut])
            if data is None:
                return nxt  # a comment or a field the gateway has no use for
            payload = data.strip()
            framed = _DATA + payload.replace(b"\n", b"\n" + _DATA) + _SEP
        if payload == _DONE:
            self.done = True
            return -1
        if payload.startswith(_ERROR):
            self.error = UpstreamServerError(
                f"deployment {self._deployment} sent an error mid-stream: "
                f"{upstream_message(payload)}",
                deployment=self._deployment,
            )
            return -1
        has_usage = _USAGE in payload or _USAGE_SPACED in payload
        if self.started and not has_usage:
            group.parts.append(framed)
            group.content = True
            group.content_bytes += len(payload)
            return nxt
        try:
            event: Any = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self.error = UpstreamInvalidResponseError(
                f"deployment {self._deployment} sent a stream chunk that is not JSON",
                deployment=self._deployment,
            )
            self.error.__cause__ = exc
            return -1
        if not isinstance(event, dict):
            event = {}
        choices = event.get("choices") or []
        content = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                content = True
                break
        usage = Usage.from_openai(event.get("usage")) if has_usage else None
        if usage is not None and not choices:
            group.flush(out)
            out.append(StreamChunk(framed, usage=usage, usage_only=True))
            return nxt
        group.parts.append(framed)
        if content:
            self.started = group.content = True
            group.content_bytes += len(payload)
        if usage is not None:
            group.usage = usage
        return nxt
