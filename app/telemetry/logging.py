"""structlog JSON logging; the request id is bound through contextvars.

Every line is one JSON object on stdout (orjson-rendered). The request's id is bound by
:class:`app.telemetry.middleware.RequestContextMiddleware` into structlog's contextvars, so
every line logged while serving a request carries ``request_id``.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


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


def configure_logging(level: str = "info") -> None:
    """JSON lines on stdout; filtered-out levels cost nothing (make_filtering_bound_logger)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    # Loggers cached on first use keep a reference to the processor list: update it in place
    # so a second configure (tests build many apps) and structlog.testing.capture_logs reach
    # them too.
    processors = structlog.get_config()["processors"]
    processors[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stdout_logger,
        cache_logger_on_first_use=True,
    )
