"""A dependency-free progress bar on stderr (drawn only when stderr is a terminal or forced)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress("eval heuristic", total)``; call :meth:`advance`; :meth:`close` at the end."""

    def __init__(
        self, label: str, total: int, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = -1.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn > 0.1 or self.done >= self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = now - self._started
        self.stream.write(
            f"\r{self.label:<28} [{bar}] {100 * frac:5.1f}% {self.done}/{self.total} "
            f"{elapsed:5.1f}s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
