"""The content heuristic: what a request needs, read from the request alone.

:func:`extract_features` turns a chat-completions body into :class:`Features`: token
estimates, expected output tokens, task category, difficulty (with the signals that fired),
language, and hard requirements (tools, vision, JSON mode, logprobs, context window).

Cost model: a single pass over the messages sums character counts (``len`` is O(1)) and
counts a few markers with ``str.count`` (C speed, linear in the prompt); words are only read
from a bounded *window* of the last user message (its head and tail) and the system prompt,
where instructions live. So the heuristic is linear in prompt length with a tiny constant,
and a 1k-token prompt takes a few microseconds.

Token estimate: ``ceil(chars / 4)`` per message plus 4 tokens of message overhead (the rule the
routing datasets use), ``chars / 1.5`` for CJK text, ~800 tokens per image part, and the JSON
size / 4 of the tool definitions. Its error against a real tokenizer is stated in README.md
(Routing → token estimate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import orjson

from app.routing.lexicon import (
    ALL_WORDS,
    CONSTRAINT_WORDS,
    GREETING_WORDS,
    HARD_WORDS,
    MULTI_STEP_PHRASES,
    STOPWORDS,
    WORD_CATEGORIES,
)

MESSAGE_OVERHEAD_TOKENS: Final = 4
IMAGE_TOKENS: Final = 800
HEAD_CHARS: Final = 400
TAIL_CHARS: Final = 200
SYSTEM_CHARS: Final = 150
EASY_BELOW: Final = 1.0
HARD_FROM: Final = 2.5
CATEGORY_ORDER: Final = ("code", "math", "summarization", "translation", "extraction", "creative")
_PUNCT_CHARS: Final = ".,:!?()[]{}<>\"'`=+*/\\|#@$%^&~\n\t\r"
_PUNCT: Final = str.maketrans({c: " " for c in _PUNCT_CHARS})
# The same table for ASCII text as bytes: ``bytes.translate`` is a plain 256-entry table look-up,
# several times faster than ``str.translate``'s per-character dict look-ups.
_PUNCT_ASCII: Final = bytes.maketrans(_PUNCT_CHARS.encode(), b" " * len(_PUNCT_CHARS))
_CJK_LANGS: Final = frozenset({"zh", "ja", "ko"})
_STOPWORD_LANGS: Final = tuple(STOPWORDS)
_STOPWORD_SETS: Final = tuple(STOPWORDS.values())
_CUE_WORDS: Final = frozenset(WORD_CATEGORIES)  # words that point to a category
_IMAGE_TYPES: Final = frozenset({"image_url", "input_image", "image"})


class Features(NamedTuple):
    """What the router knows about one request (all derived from the body alone).

    Immutable like the other routing records, but a named tuple rather than a frozen
    dataclass: one is built per request, and a frozen dataclass's ``__init__`` sets each field
    through ``object.__setattr__`` (about four times the cost of building the tuple).
    """

    input_tokens: int
    output_tokens: int
    output_tokens_source: str  # "max_tokens" | "prior"
    category: str
    difficulty: str  # "easy" | "medium" | "hard"
    difficulty_score: float
    signals: tuple[str, ...]
    language: str
    requirements: frozenset[str]  # capabilities a deployment must have
    turns: int

    @property
    def required_context(self) -> int:
        """Tokens the context window must hold: input plus expected output."""
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "output_tokens_source": self.output_tokens_source,
            "category": self.category,
            "difficulty": self.difficulty,
            "difficulty_score": self.difficulty_score,
            "signals": list(self.signals),
            "language": self.language,
            "requirements": sorted(self.requirements),
            "required_context": self.required_context,
            "turns": self.turns,
        }


def _text_of(content: Any) -> tuple[str, int]:
    """(text, image count) of an OpenAI ``content`` value."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts: list[str] = []
    images = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind in _IMAGE_TYPES:
            images += 1
    return "\n".join(texts), images


def _script_language(sample: str) -> str | None:
    """A non-Latin script's language from a short sample, or None for Latin text."""
    counts: dict[str, int] = {}
    for ch in sample:
        o = ord(ch)
        if o < 0x0370:
            continue
        if 0x3040 <= o <= 0x30FF:
            lang = "ja"
        elif 0x4E00 <= o <= 0x9FFF:
            lang = "zh"
        elif 0xAC00 <= o <= 0xD7AF:
            lang = "ko"
        elif 0x0400 <= o <= 0x04FF:
            lang = "ru"
        elif 0x0600 <= o <= 0x06FF:
            lang = "ar"
        elif 0x0900 <= o <= 0x097F:
            lang = "hi"
        elif 0x0370 <= o <= 0x03FF:
            lang = "el"
        else:
            continue
        counts[lang] = counts.get(lang, 0) + 1
    if not counts:
        return None
    if "ja" in counts:  # Japanese mixes kana with kanji
        return "ja"
    return max(counts, key=counts.__getitem__)


def _language(window: str, words: frozenset[str]) -> str:
    if not window.isascii():
        script = _script_language(window[:400])
        if script is not None:
            return script
    # The language with the most stopwords in the window; the first listed wins a tie.
    hits = [len(stop & words) for stop in _STOPWORD_SETS]
    best = max(hits)
    return _STOPWORD_LANGS[hits.index(best)] if best else "und"


def expected_output_tokens(
    body: Mapping[str, Any], category: str, priors: Mapping[str, float]
) -> tuple[int, str]:
    """``max_completion_tokens``/``max_tokens`` when given, else the category's prior."""
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit, "max_tokens"
    return max(1, int(priors.get(category, priors.get("chat", 200)))), "prior"


def _requirements(body: Mapping[str, Any], images: int) -> frozenset[str]:
    needs: set[str] = set()
    tools = body.get("tools")
    if (isinstance(tools, list) and tools) or body.get("functions"):
        needs.add("tools")
    if images:
        needs.add("vision")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        needs.add("json")
    if body.get("logprobs") is True:
        needs.add("logprobs")
    return frozenset(needs)


def _category(words: frozenset[str], fences: int, math_marks: int) -> tuple[str, int]:
    scores: dict[str, float] = {}
    for word in _CUE_WORDS & words:
        for name, weight in WORD_CATEGORIES[word]:
            scores[name] = scores.get(name, 0.0) + weight
    if fences:
        scores["code"] = scores.get("code", 0.0) + 2.0
    if math_marks >= 2:
        scores["math"] = scores.get("math", 0.0) + 1.5
    if not scores:  # no cue at all: plain chat
        return "chat", 0
    best, best_score = "chat", 0.0
    for name in CATEGORY_ORDER:
        score = scores.get(name, 0.0)
        if score > best_score:
            best, best_score = name, score
    if best != "chat" and scores.get("chat", 0.0) > best_score:
        best = "chat"
    return best, int(best_score)


def extract_features(
    body: Mapping[str, Any],
    priors: Mapping[str, float],
    input_tokens: int | None = None,
) -> Features:
    """Read a chat-completions body; ``priors`` are expected output tokens per category.

    ``input_tokens`` replaces the estimate (what-if tools, tests); normally left out.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    chars = 0
    n_in = 0
    images = 0
    turns = 0
    last_user = ""
    system = ""
    fences = 0
    code_lines = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):  # the common shape, without a call
            text = content
        else:
            text, imgs = _text_of(content)
            images += imgs
        size = len(text)
        chars += size
        n_in += MESSAGE_OVERHEAD_TOKENS + (size + 3) // 4
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            n_in += (len(orjson.dumps(calls)) + 3) // 4
        role = message.get("role")
        if role == "user":
            turns += 1
            last_user = text
        elif role in ("system", "developer") and not system:
            system = text[:SYSTEM_CHARS]
        if size and "`" in text:
            # Code blocks anywhere count; other marks are read in the window. The one-character
            # test is a memchr, far cheaper than counting "```" in prose that has no backtick.
            f = text.count("```")
            if f:
                fences += f
                code_lines += text.count("\n")
    n_in += images * IMAGE_TOKENS
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        n_in += (len(orjson.dumps(tools)) + 3) // 4

    if len(last_user) > HEAD_CHARS + TAIL_CHARS:
        window = last_user[:HEAD_CHARS] + "\n" + last_user[-TAIL_CHARS:]
    else:
        window = last_user
    if system:
        window = system + "\n" + window
    lowered = window.lower()
    if lowered.isascii():
        spaced = lowered.encode().translate(_PUNCT_ASCII).decode()
    else:
        spaced = lowered.translate(_PUNCT)
    words = ALL_WORDS.intersection(spaced.split())
    # ``in`` first: a one-character test is a memchr, a count walks every character.
    math_marks = (lowered.count("$") if "$" in lowered else 0) + (
        lowered.count("^") if "^" in lowered else 0
    )
    if "\\" in lowered:
        math_marks += lowered.count("\\frac") + lowered.count("\\sum") + lowered.count("\\int")
    language = _language(window, words)
    if language in _CJK_LANGS:
        # CJK text runs near one token per 1-1.5 characters, not four.
        n_in += max(0, int(chars / 1.5) - chars // 4)
    if input_tokens is not None:
        n_in = input_tokens

    category, _ = _category(words, fences // 2 + fences % 2, math_marks)
    n_out, source = expected_output_tokens(body, category, priors)

    score = 0.0
    signals: list[str] = []
    if n_in > 2000:
        score += 1.0
        signals.append("long_input")
    if n_in > 8000:
        score += 0.5
    hard = HARD_WORDS & words
    if hard:
        score += min(2.0, float(len(hard)))
        signals.append(f"hard_words:{len(hard)}")  # a count: features never carry prompt text
    steps = sum(map(lowered.__contains__, MULTI_STEP_PHRASES))  # how many phrases occur
    listed = (
        lowered.count("\n1.") + lowered.count("\n2.") + lowered.count("\n3.")
        if "\n1." in lowered
        else 0
    )
    if steps >= 1 or listed >= 2:
        score += 1.0 if steps + listed >= 2 else 0.5
        signals.append("multi_step")
    if len(CONSTRAINT_WORDS & words) >= 3:
        score += 0.5
        signals.append("constraints")
    if fences:
        score += 0.5
        signals.append("code_block")
        if code_lines > 60:
            score += 1.0
            signals.append("large_code")
    if math_marks >= 4:
        score += 0.5
        signals.append("math_notation")
    if turns > 6:
        score += 0.5
        signals.append("deep_conversation")
    if n_in < 60 and GREETING_WORDS & words and not hard:
        score -= 1.0
        signals.append("small_talk")
    difficulty = "easy" if score < EASY_BELOW else "hard" if score >= HARD_FROM else "medium"
    return Features(
        input_tokens=n_in,
        output_tokens=n_out,
        output_tokens_source=source,
        category=category,
        difficulty=difficulty,
        difficulty_score=score,
        signals=tuple(signals),
        language=language,
        requirements=_requirements(body, images),
        turns=turns,
    )
