"""A cascade policy through a real gateway process, driven by the official openai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.cascade.conftest import cascade_config
from tests.support.procs import Proc, gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cascade_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("cascade-e2e")
    path: Path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cascade_config()))
    with gateway(path, tmp, name="cascade") as gw:
        yield gw


@pytest.fixture
def client(cascade_gateway: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cascade_gateway.url}/v1", api_key="unused", max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_sdk_good_answer_from_the_cheap_tier(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="tiered", messages=ask("Hi"))
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].logprobs is None
    assert raw.headers["x-pareto-tier"] == "1"
    assert raw.headers["x-pareto-deployment"] == "mini@a"
    assert "x-pareto-escalation-reason" not in raw.headers


def test_sdk_weak_json_escalates_to_the_strong_tier(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiered",
        messages=ask("JSON please [sim:invalid_json@mini@a]"),
        response_format={"type": "json_object"},
    )
    completion = raw.parse()
    assert json.loads(completion.choices[0].message.content)  # the strong tier's valid JSON
    assert raw.headers["x-pareto-tier"] == "2"
    assert raw.headers["x-pareto-escalation-reason"] == "invalid_json"
    assert raw.headers["x-pareto-deployment"] == "strong@sim"
    assert float(raw.headers["x-pareto-cost-usd"]) > 0


def test_sdk_streaming_cascade(client: openai.OpenAI) -> None:
    for text, tier in (("Tell me", "1"), ("Tell me [sim:low_confidence@mini@a]", "2")):
        with client.chat.completions.with_streaming_response.create(
            model="tiered",
            messages=ask(text),
            stream=True,
            stream_options={"include_usage": True},
        ) as response:
            assert response.headers["x-pareto-tier"] == tier
            content, usage = "", None
            for chunk in response.parse():
                if chunk.choices:
                    content += chunk.choices[0].delta.content or ""
                if chunk.usage:
                    usage = chunk.usage
        assert len(content.split()) == 16
        assert usage is not None and usage.completion_tokens == 16
