"""The official openai SDK against a real gateway process and a real simulated upstream."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = pytest.mark.e2e

MSG = [{"role": "user", "content": "Tell me something"}]


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)


def test_non_streaming(client) -> None:
    raw = client.chat.completions.with_raw_response.create(model="small", messages=MSG)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-pareto-deployment"] == "small@simhttp"
    assert raw.headers["x-request-id"]


def test_streaming_with_usage(client) -> None:
    stream = client.chat.completions.create(
        model="small", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert len(text.split()) == 12
    assert usage is not None and usage.completion_tokens == 12


def test_tool_calls(client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            },
        }
    ]
    completion = client.chat.completions.create(model="big", messages=MSG, tools=tools)
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}

    stream = client.chat.completions.create(model="big", messages=MSG, tools=tools, stream=True)
    args = ""
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            args += tc.function.arguments or ""
    assert json.loads(args)["days"] == 1


def test_json_mode(client) -> None:
    completion = client.chat.completions.create(
        model="small", messages=MSG, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"score": {"type": "number"}}, "required": ["score"]}
    completion = client.chat.completions.create(
        model="small",
        messages=MSG,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) == {"score": 1.5}


def test_errors_surface_as_sdk_exceptions(client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=MSG)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=[])
    assert "must not be empty" in info.value.message


def test_upstream_auth_failure_is_502_naming_deployment_not_key(client, stack) -> None:
    # "big" because a 401 opens that deployment's breaker for the rest of this module's stack.
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="big", messages=[{"role": "user", "content": "hi [sim:error=401]"}]
        )
    assert info.value.status_code == 502
    assert "big@simhttp" in info.value.message
    assert "sim-test-key-0000" not in info.value.message
    assert "sim-test-key-0000" not in stack.log_text()


def test_mid_stream_cut_raises_in_sdk_after_partial_text(client) -> None:
    stream = client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "go [sim:cut=3]"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError, match="stream failed after it had started"):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 3


def test_demo_config_through_remote_simulator(tmp_path) -> None:
    """The compose layout: demo.yaml's simulated deployments served by `pareto simulate`."""
    from tests.conftest import ROOT
    from tests.support.procs import gateway, simulator

    demo = ROOT / "config" / "demo.yaml"
    with (
        simulator(tmp_path, "--config", str(demo), "--instant") as sim,
        gateway(demo, tmp_path, env={"PARETO_SIMULATED_BASE_URL": sim.url}) as gw,
    ):
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-oss-120b", messages=MSG, max_tokens=5
        )
        assert raw.headers["x-pareto-deployment"] == "gpt-oss-120b@groq"
        assert raw.parse().model == "gpt-oss-120b@groq"  # the simulator saw the deployment id
        assert raw.parse().usage.completion_tokens == 5
