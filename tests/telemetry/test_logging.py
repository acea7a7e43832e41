"""The JSON log lines: the request line written without a bound logger is the line
``log.info`` writes, and the level and ``capture_logs`` still apply to it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from app.telemetry.emit import RecordSink
from app.telemetry.logging import configure_logging
from app.telemetry.metrics import Metrics
from app.telemetry.record import Record

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class _Stdout:
    def __init__(self, capture: pytest.CaptureFixture[bytes]) -> None:
        self._capture = capture

    def lines(self) -> list[dict]:
        return [orjson.loads(line) for line in self._capture.readouterr().out.splitlines()]


@pytest.fixture
def stdout(capsysbinary: pytest.CaptureFixture[bytes]):
    yield _Stdout(capsysbinary)
    configure_logging("info")


def _record() -> Record:
    rec = Record(request_id="r-1", model="m", deployment="m@p", input_tokens=3)
    rec.finish_timing(0.002)
    return rec


def test_the_request_line_is_what_log_info_writes(stdout: _Stdout) -> None:
    configure_logging("info")
    rec = _record()
    structlog.contextvars.bind_contextvars(trace="t-9")
    try:
        RecordSink(Metrics())(rec)
        structlog.get_logger("pareto.request").info("request", **rec.as_dict())
    finally:
        structlog.contextvars.unbind_contextvars("trace")
    fast, slow = stdout.lines()
    assert list(fast) == list(slow)  # same keys, same order
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in slow.items() if k != "timestamp"
    }
    assert fast["event"] == "request" and fast["level"] == "info" and fast["trace"] == "t-9"
    for line in (fast, slow):
        assert ISO_UTC.match(line["timestamp"]), line["timestamp"]
        stamped = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - stamped).total_seconds()) < 5


def test_the_request_line_follows_the_configured_level(stdout: _Stdout) -> None:
    configure_logging("warning")
    RecordSink(Metrics())(_record())
    structlog.get_logger("x").warning("kept")
    assert [line["event"] for line in stdout.lines()] == ["kept"]


def test_capture_logs_sees_the_request_line(stdout: _Stdout) -> None:
    configure_logging("info")
    with capture_logs() as logs:
        RecordSink(Metrics())(_record())
    assert [e["event"] for e in logs] == ["request"]
    assert logs[0]["request_id"] == "r-1" and logs[0]["log_level"] == "info"
    assert stdout.lines() == []
