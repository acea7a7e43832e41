"""The one sink a finished :class:`Record` goes to: its log line and its metrics."""

from __future__ import annotations

import logging

from app.telemetry.logging import log_event
from app.telemetry.metrics import Metrics
from app.telemetry.record import Record

_INFO = logging.INFO


class RecordSink:
    """Called exactly once per request by the gateway (``emit``): logs, then counts.

    ``enabled=False`` (``PARETO_TELEMETRY=false``) turns both off; it exists to measure what
    telemetry costs, not for production.
    """

    __slots__ = ("_metrics", "_enabled")

    def __init__(self, metrics: Metrics, *, enabled: bool = True) -> None:
        self._metrics = metrics
        self._enabled = enabled

    def __call__(self, record: Record) -> None:
        if not self._enabled:
            return
        line = record.as_dict()
        line["event"] = "request"
        log_event(_INFO, "info", line)
        self._metrics.observe(record)
