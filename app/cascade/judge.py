"""The optional judge: a small model, called through the gateway itself, grades an answer.

The grading prompt comes from config with ``{question}`` and ``{answer}`` placeholders; the
judge's reply is read for its first number (the score). Its cost is part of the request's.
"""

from __future__ import annotations

import re
from typing import Any

from app.cascade.answer import Answer
from app.catalog.cascade import JudgeConfig
from app.tokens import content_text

_SCORE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])")
_MAX_QUOTED_CHARS = 8000  # of question and answer each, to bound the judge's cost


def judge_body(judge: JudgeConfig, request: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """The chat body sent to the judge about this request's answer."""
    text = answer.text
    if answer.tool_calls:
        text += "\n".join(f"[tool call {c.name}({c.arguments})]" for c in answer.tool_calls)
    prompt = judge.prompt.replace("{question}", last_user_text(request)[:_MAX_QUOTED_CHARS])
    prompt = prompt.replace("{answer}", text[:_MAX_QUOTED_CHARS])
    return {
        "model": judge.target,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": judge.max_tokens,
        "temperature": 0,
    }


def judge_accepts(judge: JudgeConfig, reply: str) -> bool | None:
    """Whether the judge's reply clears ``min_score``; None when it holds no score."""
    score = parse_score(reply)
    return None if score is None else score >= judge.min_score


def parse_score(reply: str) -> float | None:
    """The first number in the judge's reply."""
    match = _SCORE.search(reply)
    return float(match.group(1)) if match else None


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the request's last user message (what the answer answers)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""
