"""Acceptance checks on hand-made answers, the judge's score parsing, and SSE replay."""

from __future__ import annotations

import orjson
import pytest

from app.cascade.answer import Answer, AnswerBuilder, ToolCall
from app.cascade.checks import RequestShape, build_checks, confidence, run_checks
from app.cascade.judge import judge_accepts, judge_body, parse_score
from app.cascade.replay import completion_events
from app.catalog.cascade import DEFAULT_JUDGE_PROMPT, JudgeConfig

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
            "additionalProperties": False,
        },
    },
}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "x",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    },
}
CHECKS = build_checks(min_confidence=0.5)


def verdict(answer: Answer, **body: object) -> str | None:
    v = run_checks(CHECKS, answer, RequestShape.from_body(body))
    return v.reason if v else None


def test_plain_good_answer_passes() -> None:
    assert verdict(Answer("Paris is the capital of France.", "stop", logprobs=(-0.01,) * 5)) is None


@pytest.mark.parametrize(
    ("answer", "body", "reason"),
    [
        (Answer("", "stop"), {}, "refusal"),
        (Answer("   ", "stop"), {}, "refusal"),
        (Answer("half an ans", "length"), {}, "truncated"),
        (Answer('{"n": 1', "stop"), {"response_format": {"type": "json_object"}}, "invalid_json"),
        (Answer('{"n": "one"}', "stop"), {"response_format": SCHEMA}, "schema_mismatch"),
        (Answer("[]", "stop"), {"response_format": SCHEMA}, "schema_mismatch"),
        (
            Answer("", "tool_calls", (ToolCall("lookup", '{"q": '),)),
            {"tools": [TOOL]},
            "invalid_json",
        ),
        (
            Answer("", "tool_calls", (ToolCall("lookup", '{"x": 1}'),)),
            {"tools": [TOOL]},
            "schema_mismatch",
        ),
        (
            Answer("", "tool_calls", (ToolCall("other", "{}"),)),
            {"tools": [TOOL]},
            "schema_mismatch",
        ),
        (Answer("I'm sorry, but I can't help with that.", "stop"), {}, "refusal"),
        (Answer("As an AI language model, I cannot do that.", "stop"), {}, "refusal"),
        (Answer("I don't know.", "stop"), {}, "refusal"),
        (Answer("ok", "stop", refusal="no"), {}, "refusal"),
        (Answer("Maybe 42.", "stop", logprobs=(-2.3, -2.3, -0.1)), {}, "low_confidence"),
    ],
)
def test_each_check_names_its_reason(answer: Answer, body: dict, reason: str) -> None:
    assert verdict(answer, **body) == reason


def test_valid_json_and_tool_arguments_pass() -> None:
    assert verdict(Answer('{"n": 3}', "stop"), response_format=SCHEMA) is None
    call = Answer("", "tool_calls", (ToolCall("lookup", '{"q": "tides"}'),))
    assert verdict(call, tools=[TOOL]) is None


def test_refusal_words_later_in_an_answer_are_not_a_refusal() -> None:
    text = "Paris. Some say 'I can't help loving it', and I don't know a finer city."
    assert verdict(Answer(text, "stop")) is None


def test_confidence_is_geometric_mean_probability_and_skipped_without_logprobs() -> None:
    assert confidence(Answer("x", "stop", logprobs=(-0.02, -0.02))) == pytest.approx(
        0.980, abs=1e-3
    )
    assert confidence(Answer("x", "stop")) is None
    assert verdict(Answer("fine", "stop", logprobs=None)) is None


def test_checks_compose_and_can_be_turned_off() -> None:
    shape = RequestShape.from_body({})
    assert (
        run_checks(build_checks(structural=False, refusal=False), Answer("", "length"), shape)
        is None
    )
    custom = build_checks(refusal_patterns=[r"computer says no"])
    assert run_checks(custom, Answer("Computer says no.", "stop"), shape).reason == "refusal"


def test_invalid_client_schema_is_not_a_reason_to_escalate() -> None:
    bad = {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}
    assert verdict(Answer('{"a": 1}', "stop"), response_format=bad) is None


def test_judge_prompt_and_score() -> None:
    judge = JudgeConfig("small", DEFAULT_JUDGE_PROMPT, 7, 8, False)
    body = judge_body(
        judge, {"messages": [{"role": "user", "content": "Why?"}]}, Answer("Because.", "stop")
    )
    prompt = body["messages"][0]["content"]
    assert "Why?" in prompt and "Because." in prompt and body["model"] == "small"
    assert (
        parse_score("Score: 8/10") == 8 and parse_score("7.5") == 7.5 and parse_score("no") is None
    )
    assert judge_accepts(judge, "8") is True and judge_accepts(judge, "3") is False
    assert judge_accepts(judge, "great answer") is None


def test_replayed_events_rebuild_the_same_answer() -> None:
    body = {
        "id": "c1",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hi there",
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"q":"a"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    events = list(completion_events(body, include_usage=True))
    assert events[-1] == b"data: [DONE]\n\n"
    builder = AnswerBuilder()
    for event in events[:-1]:
        builder.add(event.removeprefix(b"data: ").strip())
    assert builder.build() == Answer.from_completion(body)
    assert orjson.loads(events[-2].removeprefix(b"data: "))["usage"]["total_tokens"] == 5
    assert not any(b'"usage"' in e for e in completion_events(body, include_usage=False))
