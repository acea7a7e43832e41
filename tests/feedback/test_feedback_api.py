"""POST /v1/feedback: a served request's features plus the score land in the feedback log,
and `pareto train` learns from that log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.cli import main
from app.routing.learned import LearnedScorer, featurize

MSG = [{"role": "user", "content": "prove the theorem by induction"}]


async def _served(client, rid: str, content: str = MSG[0]["content"], stream: bool = False):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "small",
            "messages": [{"role": "user", "content": content}],
            "stream": stream,
        },
        headers={"x-request-id": rid},
    )
    assert r.status_code == 200, r.text
    return r


async def test_feedback_stores_features_model_and_score(app_client, tmp_path: Path) -> None:
    log = tmp_path / "fb" / "feedback.jsonl"
    client = await app_client(feedback_path=log, feedback_dim=4096)
    await _served(client, "req-1")
    r = await client.post("/v1/feedback", json={"request_id": "req-1", "score": 0.25})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "object": "feedback",
        "request_id": "req-1",
        "model": "small",
        "score": 0.25,
        "stored": True,
    }
    [line] = log.read_text().splitlines()
    record = json.loads(line)
    assert record["request_id"] == "req-1"
    assert record["score"] == 0.25
    assert record["model"] == "small"
    assert record["deployment"] == "small@sim"
    # The routing heuristic's features of the request are stored with it.
    assert record["features"]["category"] == "math"
    assert record["features"]["input_tokens"] > 0
    expected = featurize(MSG, 4096)
    assert record["hashed"]["dim"] == 4096
    assert record["hashed"]["indices"] == expected.indices.tolist()
    assert "prove" not in line  # the prompt text itself is not stored


async def test_streamed_requests_take_feedback_too(app_client, tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    client = await app_client(feedback_path=log)
    await _served(client, "req-s", stream=True)
    r = await client.post("/v1/feedback", json={"request_id": "req-s", "score": 1})
    assert r.status_code == 200, r.text
    assert json.loads(log.read_text())["score"] == 1.0


async def test_unknown_request_and_bad_score_are_clear_errors(app_client, tmp_path: Path) -> None:
    client = await app_client(feedback_path=tmp_path / "feedback.jsonl")
    r = await client.post("/v1/feedback", json={"request_id": "nope", "score": 1})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "request_not_found"
    await _served(client, "req-2")
    for bad in (1.5, -0.1, "good", True, None):
        r = await client.post("/v1/feedback", json={"request_id": "req-2", "score": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"]["param"] == "score"
    assert not (tmp_path / "feedback.jsonl").exists()


async def test_feedback_off_by_default(app_client) -> None:
    client = await app_client()
    r = await client.post("/v1/feedback", json={"request_id": "x", "score": 1})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "feedback_disabled"
    assert "PARETO_FEEDBACK_PATH" in r.json()["error"]["message"]


async def test_memory_window_is_bounded(app_client, tmp_path: Path) -> None:
    client = await app_client(feedback_path=tmp_path / "f.jsonl", feedback_window=2)
    for i in range(3):
        await _served(client, f"w-{i}")
    assert (
        await client.post("/v1/feedback", json={"request_id": "w-0", "score": 1})
    ).status_code == 404
    assert (
        await client.post("/v1/feedback", json={"request_id": "w-2", "score": 1})
    ).status_code == 200


async def test_pareto_train_reads_the_feedback_log(app_client, tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    client = await app_client(feedback_path=log, feedback_dim=4096)
    for i in range(40):
        hard = i % 2 == 0
        text = "prove the theorem by induction" if hard else "hello what is the capital"
        await _served(client, f"t-{i}", text)
        await client.post("/v1/feedback", json={"request_id": f"t-{i}", "score": 0 if hard else 1})
    out = tmp_path / "router.bin"
    assert (
        main(
            [
                "train",
                str(log),
                "-o",
                str(out),
                "--dim",
                "4096",
                "--folds",
                "0",
                "--steps",
                "100",
                "--learning-rate",
                "0.1",
            ]
        )
        == 0
    )
    scorer = LearnedScorer.load(out)
    assert scorer.models == ("small",)
    hard = scorer.predict([{"role": "user", "content": "prove the theorem by induction"}])
    easy = scorer.predict([{"role": "user", "content": "hello what is the capital"}])
    assert hard["small"] < 0.3 < 0.7 < easy["small"]


@pytest.mark.redis
async def test_recent_requests_live_in_redis_when_configured(
    app_client, tmp_path: Path, redis_prefix: str
) -> None:
    url = "redis://127.0.0.1:6379/0"
    a = await app_client(
        feedback_path=tmp_path / "a.jsonl", redis_url=url, feedback_key_prefix=redis_prefix
    )
    b = await app_client(
        feedback_path=tmp_path / "b.jsonl", redis_url=url, feedback_key_prefix=redis_prefix
    )
    await _served(a, "shared-1")
    # Another replica (its own memory) takes the feedback through Redis.
    r = await b.post("/v1/feedback", json={"request_id": "shared-1", "score": 0.5})
    assert r.status_code == 200, r.text
    assert json.loads((tmp_path / "b.jsonl").read_text())["model"] == "small"
    redis = aioredis.Redis.from_url(url)
    try:
        ttl = await redis.pttl(redis_prefix + "shared-1")
        assert 0 < ttl <= 3600 * 1000
        await redis.delete(redis_prefix + "shared-1")
    finally:
        await redis.aclose()
