"""The feedback log: one JSON object per line, appended; ``pareto train`` reads it as is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson


class FeedbackLog:
    """Appends records to a JSONL file (parent folders created on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(line)

    async def append(self, record: dict[str, object]) -> None:
        """Write one record; lines from concurrent requests never interleave."""
        line = orjson.dumps(record) + b"\n"
        async with self._lock:
            await asyncio.to_thread(self._append, line)
