"""Hot reload: a valid new config replaces the old one atomically; an invalid one is refused.

Triggers: a change of the config files' modification times (polled), SIGHUP, and
``POST /admin/reload``. In-flight requests keep the catalog object they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path

import structlog

from app.catalog.loader import ConfigError, load_catalog, log_disabled
from app.catalog.model import Catalog

log = structlog.get_logger("pareto.reload")


class Reloader:
    """Loads the config again and hands a valid result to ``apply``."""

    def __init__(self, path: Path, apply: Callable[[Catalog], None]) -> None:
        self.path = path
        self._apply = apply
        self._stamp = self._mtimes()

    def _mtimes(self) -> tuple[float, ...]:
        folder = self.path.resolve().parent
        stamps = []
        for file in sorted(folder.glob("*.y*ml")):
            with contextlib.suppress(OSError):
                stamps.append(file.stat().st_mtime)
        return tuple(stamps)

    def reload(self) -> Catalog:
        """Load and apply; raise :class:`ConfigError` (old catalog kept) when invalid."""
        self._stamp = self._mtimes()
        try:
            catalog = load_catalog(self.path)
        except ConfigError as exc:
            log.error("config_rejected", path=str(self.path), problems=exc.problems)
            raise
        log_disabled(catalog)
        self._apply(catalog)
        log.info("config_reloaded", path=str(self.path), deployments=len(catalog.deployments))
        return catalog

    def _try_reload(self) -> None:
        with contextlib.suppress(ConfigError):
            self.reload()

    async def watch(self, interval_s: float) -> None:
        """Poll the config folder's modification times; reload on change."""
        while True:
            await asyncio.sleep(interval_s)
            stamp = self._mtimes()
            if stamp != self._stamp:
                self._try_reload()

    def install_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._try_reload)
