"""``pareto.user_id`` / ``pareto.tags``: read into the log line and the feedback log, bounded,
never a metric label; ``pareto`` keys that nothing reads are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

HELLO = [{"role": "user", "content": "Say hello"}]
USER = "end-user-7f3a"
TAGS = {"team": "search-quality", "env": "staging-eu"}


def request_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == "request"]


@pytest.mark.parametrize("stream", [False, True])
async def test_attribution_reaches_the_log_line_but_no_metric(app_client, stream: bool) -> None:
    client = await app_client()
    with capture_logs() as logs:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "small",
                "messages": HELLO,
                "stream": stream,
                "pareto": {"user_id": USER, "tags": TAGS},
            },
        )
        assert r.status_code == 200, r.text
        await client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": HELLO, "pareto": {"tags": ["nightly", "batch"]}},
        )
        await client.post("/v1/chat/completions", json={"model": "small", "messages": HELLO})
    first, listed, plain = request_lines(logs)
    assert first["user_id"] == USER and first["tags"] == TAGS and first["stream"] is stream
    assert listed["tags"] == ["nightly", "batch"] and listed["user_id"] is None
    assert plain["tags"] is None and plain["user_id"] is None
    metrics = (await client.get("/metrics")).text
    for text in (USER, "search-quality", "staging-eu", "nightly"):
        assert text not in metrics


async def test_attribution_is_kept_with_the_feedback(app_client, tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    client = await app_client(feedback_path=log)
    for rid, extra in (("req-a", {"user_id": USER, "tags": TAGS}), ("req-b", {})):
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": HELLO, "pareto": extra},
            headers={"x-request-id": rid},
        )
        assert r.status_code == 200, r.text
        r = await client.post("/v1/feedback", json={"request_id": rid, "score": 1})
        assert r.status_code == 200, r.text
    tagged, plain = (json.loads(line) for line in log.read_text().splitlines())
    assert tagged["user_id"] == USER and tagged["tags"] == TAGS
    assert "user_id" not in plain and "tags" not in plain


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        ({"user_id": 42}, "pareto.user_id", "non-empty string"),
        ({"user_id": ""}, "pareto.user_id", "non-empty string"),
        ({"user_id": "u" * 257}, "pareto.user_id", "at most 256 characters"),
        ({"tags": "team=search"}, "pareto.tags", "an object of strings"),
        ({"tags": {f"k{i}": "v" for i in range(17)}}, "pareto.tags", "at most 16 tags"),
        ({"tags": [f"t{i}" for i in range(17)]}, "pareto.tags", "at most 16 tags"),
        ({"tags": {"team": 7}}, "pareto.tags.team", "non-empty string"),
        ({"tags": {"team": "x" * 129}}, "pareto.tags.team", "at most 128 characters"),
        ({"tags": {"k" * 129: "v"}}, "pareto.tags key", "at most 128 characters"),
        ({"tags": ["ok", ""]}, "pareto.tags.1", "non-empty string"),
        ({"tags": [["nested"]]}, "pareto.tags.0", "non-empty string"),
    ],
)
async def test_bad_attribution_is_a_400_naming_the_field(app_client, extra, param, needle) -> None:
    client = await app_client()
    body = {"model": "small", "messages": HELLO, "pareto": extra}
    with capture_logs() as logs:
        for path in ("/v1/chat/completions", "/v1/route"):
            r = await client.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            error = r.json()["error"]
            assert error["param"] == param and error["code"] == "invalid_attribution", error
            assert needle in error["message"], error
    (line,) = request_lines(logs)  # the chat request's record, with its error
    assert line["status"] == 400 and line["user_id"] is None


@pytest.mark.parametrize("key", ["session", "budget", "cascade", "tag", "userid"])
async def test_pareto_keys_nothing_reads_are_refused(app_client, key: str) -> None:
    client = await app_client()
    body = {"model": "small", "messages": HELLO, "pareto": {key: "anything"}}
    for path in ("/v1/chat/completions", "/v1/route"):
        r = await client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["param"] == f"pareto.{key}", error
        assert "user_id" in error["message"] and "session_id" in error["message"]
