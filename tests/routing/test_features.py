"""The content heuristic: what it reads from a request."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.model import DEFAULT_OUTPUT_PRIORS
from app.routing.features import extract_features

PRIORS = dict(DEFAULT_OUTPUT_PRIORS)


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("hi! how are you doing today?", "chat"),
        ("Fix the bug in this Python function:\n```python\ndef f(x): return x/0\n```", "code"),
        ("Solve the equation x^2 - 5x + 6 = 0 and prove your answer is complete.", "math"),
        ("Summarize the following article in three bullet points: ...", "summarization"),
        ("Translate into French: the weather is nice today.", "translation"),
        ("Extract every person and company entity from this text as JSON fields.", "extraction"),
        ("Write a haiku about autumn rain.", "creative"),
    ],
)
def test_category(text: str, category: str) -> None:
    assert extract_features(user(text), PRIORS).category == category


def test_difficulty_signals() -> None:
    easy = extract_features(user("hello there!"), PRIORS)
    assert easy.difficulty == "easy" and "small_talk" in easy.signals
    proof = extract_features(
        user(
            "Prove rigorously, step by step, that the sum of two even integers is even, then "
            "derive the same lemma for odd integers."
        ),
        PRIORS,
    )
    assert proof.difficulty == "hard"
    assert "multi_step" in proof.signals
    code = "\n".join(f"x{i} = compute({i})" for i in range(80))
    refactor = extract_features(user(f"Refactor this module:\n```python\n{code}\n```"), PRIORS)
    assert refactor.difficulty == "hard" and "large_code" in refactor.signals
    # signals never carry the prompt's words (features are logged and stored for feedback)
    assert all("rigorously" not in s for s in proof.signals)


def test_tokens_output_and_requirements() -> None:
    body = user(
        [
            {"type": "text", "text": "x" * 4000},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        ],
        max_tokens=250,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        response_format={"type": "json_object"},
    )
    f = extract_features(body, PRIORS)
    assert 1000 + 800 <= f.input_tokens <= 1000 + 800 + 40  # text + one image + tool schema
    assert (f.output_tokens, f.output_tokens_source) == (250, "max_tokens")
    assert f.requirements == {"vision", "tools", "json"}
    assert f.required_context == f.input_tokens + 250
    prior = extract_features(user("Write a long story about a dragon."), PRIORS)
    assert prior.output_tokens_source == "prior"
    assert prior.output_tokens == PRIORS["creative"]
    mct = extract_features(user("hi", max_completion_tokens=77, max_tokens=5), PRIORS)
    assert mct.output_tokens == 77


def test_language() -> None:
    assert extract_features(user("What is the capital of France?"), PRIORS).language == "en"
    assert extract_features(user("¿Qué es lo que hace este código?"), PRIORS).language == "es"
    assert (
        extract_features(user("Wie ist das Wetter in Berlin und ist es kalt?"), PRIORS).language
        == "de"
    )
    zh = extract_features(user("请把这段文字翻译成英文，谢谢你的帮助"), PRIORS)
    assert zh.language == "zh"
    assert (
        zh.input_tokens > (len("请把这段文字翻译成英文，谢谢你的帮助") + 3) // 4 + 4
    )  # CJK is denser
    assert extract_features(user("Привет, как дела?"), PRIORS).language == "ru"


def test_heuristic_reads_a_bounded_window() -> None:
    """A long document followed by the ask: the ask at the end still sets the category."""
    doc = "The committee met on Tuesday and reviewed the budget. " * 2000
    f = extract_features(user(doc + "\nSummarize the text above."), PRIORS)
    assert f.category == "summarization"
    assert f.input_tokens > 25000 and "long_input" in f.signals
