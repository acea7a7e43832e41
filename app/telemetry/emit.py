"""The one sink a finished :class:`Record` goes to: its log line and its metrics."""

from __future__ import annotations

import structlog

from app.telemetry.metrics import Metrics
from app.telemetry.record import Record

log = structlog.get_logger("pareto.request")


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
        log.info("request", **record.as_dict())
        self._metrics.observe(record)
