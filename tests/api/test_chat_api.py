"""The HTTP surface through an in-process app on instant simulated deployments."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import sim_deployment, small_config

MSG = [{"role": "user", "content": "Say hello"}]


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    return [e.removeprefix("data: ") for e in text.strip().split("\n\n")]


async def test_non_streaming_returns_usage_and_headers(app_client) -> None:
    client = await app_client()
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": MSG},
        headers={"x-request-id": "req-123"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    assert r.headers["x-request-id"] == "req-123"
    assert r.headers["x-pareto-model"] == "small"
    assert r.headers["x-pareto-deployment"] == "small@sim"  # cheapest of the model's two


async def test_generated_request_id_when_absent_or_unsafe(app_client) -> None:
    client = await app_client()
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": MSG},
        headers={"x-request-id": "bad id\twith spaces"},
    )
    assert len(r.headers["x-request-id"]) == 32


async def test_stream_hides_usage_unless_asked(app_client) -> None:
    client = await app_client()
    r = await client.post(
        "/v1/chat/completions", json={"model": "small", "messages": MSG, "stream": True}
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c.get("usage") is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "small",
            "messages": MSG,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    chunks = [orjson.loads(e) for e in sse_events(r.text)[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16


async def test_unknown_model_is_404_listing_valid_names(app_client) -> None:
    client = await app_client()
    r = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": MSG})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "small" in err["message"] and "auto" in err["message"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "body is empty"),
        (b"[1,2]", "must be a JSON object"),
        (b'{"model":"small"}', "'messages' is required"),
        (b'{"model":"small","messages":[]}', "must not be empty"),
        (b'{"model":"small","messages":"hi"}', "must be an array"),
        (b'{"model":"small","messages":[{"role":"wizard","content":"x"}]}', "'messages[0].role'"),
        (b'{"model":"small","messages":[{"role":"user","content":5}]}', "messages[0].content"),
        (b'{"messages":[{"role":"user","content":"x"}]}', "'model' is required"),
        (
            b'{"model":"small","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
            "'stream' must be a boolean",
        ),
        (
            b'{"model":"small","messages":[{"role":"user","content":"x"}],"max_tokens":-3}',
            "'max_tokens' must be a positive integer",
        ),
    ],
)
async def test_bad_input_gets_openai_error_saying_what_to_fix(
    app_client, payload, fragment
) -> None:
    client = await app_client()
    r = await client.post(
        "/v1/chat/completions", content=payload, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert fragment in err["message"]


async def test_body_over_limit_is_413(app_client) -> None:
    client = await app_client(max_body_bytes=1000)
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "x" * 2000}]},
    )
    assert r.status_code == 413
    assert "PARETO_MAX_BODY_BYTES" in r.json()["error"]["message"]


async def test_unknown_fields_reach_the_upstream_untouched(app_client, monkeypatch) -> None:
    from app.providers.simulated import SimulatedProvider

    seen = {}
    original = SimulatedProvider.complete

    async def spy(self, call):
        seen.update(call.body)
        return await original(self, call)

    monkeypatch.setattr(SimulatedProvider, "complete", spy)
    client = await app_client()
    extra = {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["x"],
        "user": "u1",
        "metadata": {"a": "b"},
        "logit_bias": {"1": 2},
        "parallel_tool_calls": False,
    }
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": MSG, **extra, "pareto": {"session_id": "s"}},
    )
    assert r.status_code == 200
    for key, value in extra.items():
        assert seen[key] == value
    assert "pareto" not in seen


async def test_all_deployments_failing_is_503_listing_attempts(app_client) -> None:
    config = small_config(
        **{
            "small@sim": sim_deployment(faults={"error_rate": 1.0, "error_status": [500]}),
            "small@sim2": sim_deployment(faults={"error_rate": 1.0, "error_status": [502]}),
        }
    )
    client = await app_client(config)
    r = await client.post("/v1/chat/completions", json={"model": "small", "messages": MSG})
    assert r.status_code == 503
    msg = r.json()["error"]["message"]
    assert "small@sim: upstream_5xx" in msg and "small@sim2: upstream_5xx" in msg
    assert r.headers["retry-after"]


async def test_failover_to_next_deployment_is_invisible(app_client) -> None:
    config = small_config(
        **{"small@sim": sim_deployment(price_in=0.01, price_out=0.01, faults={"error_rate": 1.0})}
    )
    client = await app_client(config)
    r = await client.post(
        "/v1/chat/completions", json={"model": "small", "messages": MSG, "stream": True}
    )
    assert r.status_code == 200
    assert r.headers["x-pareto-deployment"] == "small@sim2"
    assert r.headers["x-pareto-fallback-reason"] == "upstream_5xx"
    assert sse_events(r.text)[-1] == "[DONE]"


async def test_mid_stream_cut_ends_with_error_event_not_done(app_client) -> None:
    config = small_config(
        **{"small@sim": sim_deployment(price_in=0.01, price_out=0.01, faults={"cut_rate": 1.0})}
    )
    client = await app_client(config)
    r = await client.post(
        "/v1/chat/completions", json={"model": "small", "messages": MSG, "stream": True}
    )
    events = sse_events(r.text)
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["code"] == "stream_interrupted"
    assert sum(1 for e in events if '"content":"' in e and '"content":""' not in e) >= 1


async def test_models_lists_models_and_policies(app_client) -> None:
    client = await app_client()
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {"small", "big", "auto", "cheap"} <= ids


async def test_health_and_ready(app_client) -> None:
    client = await app_client()
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["catalog"] == "ok"


async def test_unknown_route_and_method_are_openai_errors(app_client) -> None:
    client = await app_client()
    r = await client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = await client.get("/v2/nothing")
    assert r.status_code == 404 and "/v1" in r.json()["error"]["message"]


async def test_route_and_feedback_bodies_name_their_own_limits(app_client) -> None:
    client = await app_client(max_body_bytes=1000)
    big = {"model": "small", "messages": [{"role": "user", "content": "x" * 2000}]}
    r = await client.post("/v1/route", json=big)
    assert r.status_code == 413 and "PARETO_MAX_BODY_BYTES" in r.json()["error"]["message"]
    r = await client.post("/v1/feedback", json={"request_id": "r", "note": "x" * 70_000})
    assert r.status_code == 413
    message = r.json()["error"]["message"]
    assert "/v1/feedback" in message and "PARETO_MAX_BODY_BYTES" not in message
