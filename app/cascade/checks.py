"""Acceptance checks: is a tier's answer good enough to return, or must the gateway escalate?

Each check is a small callable ``check(answer, shape) -> Verdict | None`` (None = passes).
A cascade policy composes them in order (:func:`build_checks`); the first failing check names
the escalation reason. The judge, which needs a model call, lives in :mod:`app.cascade.judge`.

- :class:`NonEmpty` — an answer with no text and no tool call is a non-answer (``refusal``).
- :class:`NotTruncated` — ``finish_reason: length`` means the answer was cut (``truncated``).
- :class:`JsonAnswer` — in JSON mode the text must parse (``invalid_json``) and, with
  ``response_format.json_schema``, validate (``schema_mismatch``).
- :class:`ToolArguments` — tool-call arguments must parse (``invalid_json``) and match the
  tool's parameter schema (``schema_mismatch``).
- :class:`RefusalDetector` — the model's ``refusal`` field, or text that opens with a refusal
  or a non-answer (``refusal``).
- :class:`Confidence` — ``exp(mean token logprob)`` under a threshold (``low_confidence``);
  skipped when the deployment returned no logprobs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from jsonschema import exceptions as js_exceptions
from jsonschema import validators as js_validators
from jsonschema.protocols import Validator

from app.cascade.answer import Answer
from app.cascade.reasons import EscalationReason

# Openings of refusals and non-answers (case-insensitive, matched at the answer's start).
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"i(?:'m| am) sorry,? but i (?:can(?:'|no)t|cannot|am unable|won't)",
    r"i (?:can(?:'|no)t|cannot|won't|am unable to|am not able to) (?:help|assist|comply|"
    r"provide|do that|answer)",
    r"(?:sorry,? )?i(?:'m| am) (?:unable|not able) to (?:help|assist|answer|provide)",
    r"as an ai(?: language model)?,? i (?:can(?:'|no)t|cannot|don't|do not)",
    r"i (?:don't|do not) know\b",
    r"i(?:'m| am) not sure\b",
)
_REFUSAL_WINDOW = 240  # characters of the answer's start the patterns look at


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why an answer was not accepted: the escalation reason and a human-readable detail."""

    reason: EscalationReason
    detail: str


class RequestShape:
    """What the checks need from the request, computed once per request (not per tier)."""

    __slots__ = ("json_mode", "schema", "tools")

    def __init__(
        self,
        json_mode: bool,
        schema: Validator | None,
        tools: Mapping[str, Validator | None],
    ) -> None:
        self.json_mode = json_mode
        self.schema = schema
        self.tools = tools

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RequestShape:
        """JSON mode and compiled schemas of ``response_format`` and ``tools``."""
        rf = body.get("response_format")
        rf_type = rf.get("type") if isinstance(rf, dict) else None
        schema: Validator | None = None
        if rf_type == "json_schema" and isinstance(rf, dict):
            spec = rf.get("json_schema")
            if isinstance(spec, dict):
                schema = compile_schema(spec.get("schema"))
        tools: dict[str, Validator | None] = {}
        for tool in body.get("tools") or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                tools[fn["name"]] = compile_schema(fn.get("parameters"))
        return cls(rf_type in ("json_object", "json_schema"), schema, tools)


def compile_schema(schema: Any) -> Validator | None:
    """A validator for a JSON schema; None when there is none or it is itself invalid
    (an invalid schema is the upstream's to reject, not a reason to escalate)."""
    if not isinstance(schema, dict) or not schema:
        return None
    cls = js_validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except js_exceptions.SchemaError:
        return None
    validator: Validator = cls(schema)
    return validator


def _schema_problem(validator: Validator, instance: Any) -> str | None:
    error = js_exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"[:300]


class AcceptanceCheck(Protocol):
    """One composable check; returns None when the answer passes."""

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None: ...


class NonEmpty:
    """No text and no tool call is a non-answer."""

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None:
        if answer.tool_calls or answer.text.strip() or answer.refusal:
            return None
        return Verdict("refusal", "the answer is empty")


class NotTruncated:
    """An answer cut by the token limit is incomplete."""

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None:
        if answer.finish_reason == "length":
            return Verdict("truncated", "the answer hit max_tokens (finish_reason: length)")
        return None


class JsonAnswer:
    """JSON mode: the text parses, and matches ``response_format.json_schema`` when given."""

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None:
        if not shape.json_mode or answer.tool_calls:
            return None
        try:
            value = orjson.loads(answer.text)
        except orjson.JSONDecodeError as exc:
            return Verdict("invalid_json", f"the answer is not valid JSON: {exc}")
        if shape.schema is not None:
            problem = _schema_problem(shape.schema, value)
            if problem is not None:
                detail = f"the answer does not match the schema: {problem}"
                return Verdict("schema_mismatch", detail)
        return None


class ToolArguments:
    """Tool calls name a tool of the request and their arguments match its parameters."""

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None:
        for call in answer.tool_calls:
            try:
                args = orjson.loads(call.arguments or "{}")
            except orjson.JSONDecodeError as exc:
                return Verdict(
                    "invalid_json", f"tool call {call.name!r} arguments are not valid JSON: {exc}"
                )
            if call.name not in shape.tools:
                return Verdict("schema_mismatch", f"tool call names an unknown tool {call.name!r}")
            validator = shape.tools[call.name]
            if validator is not None:
                problem = _schema_problem(validator, args)
                if problem is not None:
                    return Verdict(
                        "schema_mismatch",
                        f"tool call {call.name!r} arguments do not match its parameters: {problem}",
                    )
        return None


class RefusalDetector:
    """The ``refusal`` field, or an answer that opens with a refusal or a non-answer."""

    __slots__ = ("_pattern",)

    def __init__(self, patterns: Iterable[str] = DEFAULT_REFUSAL_PATTERNS) -> None:
        joined = "|".join(f"(?:{p})" for p in patterns)
        self._pattern = re.compile(rf"^\W*(?:{joined})", re.IGNORECASE)

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None:
        if answer.refusal:
            return Verdict("refusal", "the model refused (refusal field)")
        head = answer.text[:_REFUSAL_WINDOW].replace("\u2019", "'")
        if head and self._pattern.search(head):
            return Verdict("refusal", f"the answer reads as a refusal: {head[:80]!r}")
        return None


def confidence(answer: Answer) -> float | None:
    """``exp(mean token logprob)``: the geometric-mean token probability, or None."""
    if not answer.logprobs:
        return None
    return math.exp(sum(answer.logprobs) / len(answer.logprobs))


class Confidence:
    """The answer's confidence must reach ``minimum`` (when logprobs are available)."""

    __slots__ = ("minimum",)

    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def __call__(self, answer: Answer, shape: RequestShape) -> Verdict | None:
        value = confidence(answer)
        if value is None or value >= self.minimum:
            return None
        return Verdict(
            "low_confidence", f"confidence {value:.3f} is under the policy's {self.minimum}"
        )


def build_checks(
    *,
    structural: bool = True,
    refusal: bool = True,
    min_confidence: float | None = None,
    refusal_patterns: Sequence[str] = (),
) -> tuple[AcceptanceCheck, ...]:
    """The checks of a policy, cheapest and most decisive first."""
    checks: list[AcceptanceCheck] = []
    if structural:
        checks += [NonEmpty(), NotTruncated(), JsonAnswer(), ToolArguments()]
    if refusal:
        checks.append(RefusalDetector((*DEFAULT_REFUSAL_PATTERNS, *refusal_patterns)))
    if min_confidence is not None:
        checks.append(Confidence(min_confidence))
    return tuple(checks)


def run_checks(
    checks: Sequence[AcceptanceCheck], answer: Answer, shape: RequestShape
) -> Verdict | None:
    """The first failing check's verdict, or None when every check passes."""
    for check in checks:
        verdict = check(answer, shape)
        if verdict is not None:
            return verdict
    return None
