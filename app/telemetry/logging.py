"""structlog JSON logging; the request id is bound through contextvars.

Every line is one JSON object on stdout (orjson-rendered). The request's id is bound by
:class:`app.telemetry.middleware.RequestContextMiddleware` into structlog's contextvars, so
every line logged while serving a request carries ``request_id``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
import structlog

# The level configure_logging set (0 = everything, as structlog's default wrapper logs).
_min_level = logging.NOTSET


class StdoutLogger:
    """Writes each rendered line to the *current* ``sys.stdout`` (cached loggers outlive
    a replaced stdout, e.g. under test capture), flushed so lines appear as they happen."""

    __slots__ = ()

    def msg(self, message: bytes) -> None:
        out = sys.stdout.buffer
        out.write(message + b"\n")
        out.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stdout_logger(*args: object) -> StdoutLogger:
    return StdoutLogger()


class _UtcIsoStamp:
    """``timestamp``: ISO 8601 in UTC with microseconds and a ``Z``, as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it, at a fifth of its cost (the date and
    time of day are formatted once a second)."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: object, method: str, event_dict: Any) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def log_event(level: int, method: str, event_dict: dict[str, Any]) -> None:
    """Log ``event_dict`` (its ``event`` key set) through the configured processors, without
    a bound logger: what ``log.info(event, **fields)`` does on a logger with no bound values,
    minus the keyword round trips (about a third of a request line's cost). For the one line
    every request writes; ``structlog.testing.capture_logs`` still sees it."""
    if level < _min_level:
        return
    config = structlog.get_config()
    try:
        for processor in config["processors"]:
            event_dict = processor(None, method, event_dict)
    except structlog.DropEvent:
        return
    getattr(config["logger_factory"](), method)(event_dict)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stdout; filtered-out levels cost nothing (make_filtering_bound_logger)."""
    global _min_level
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    _min_level = numeric
    # Loggers cached on first use keep a reference to the processor list: update it in place
    # so a second configure (tests build many apps) and structlog.testing.capture_logs reach
    # them too.
    processors = structlog.get_config()["processors"]
    processors[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcIsoStamp(),
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stdout_logger,
        cache_logger_on_first_use=True,
    )
