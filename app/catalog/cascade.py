"""Cascade policies: the YAML shape (phase one) and the frozen runtime type (phase two).

A cascade policy is a policy with a ``cascade:`` block::

    policies:
      cascade:
        cascade:
          tiers:
            - {model: gpt-oss-120b, timeout_s: 4}   # cheap tier; escalate after 4 s
            - {policy: best}                          # a routed sub-policy
          max_tiers: 2
          checks: {structural: true, refusal: true, min_confidence: 0.5}
          judge: {model: llama-3.1-8b, min_score: 7}  # optional
          streaming: buffer                           # or last_tier_only

Cross-references (tier and judge targets) are checked by :func:`compile_cascade`, which the
loader calls with every model and policy known. ``policies.yaml`` is shared by several
catalogs, so a cascade naming a model that *this* catalog lacks is disabled with a reason
(like a deployment without its key), while a malformed cascade is a config error.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

StreamingMode = Literal["buffer", "last_tier_only"]
DEFAULT_JUDGE_PROMPT = (
    "You grade an assistant's answer.\n\nQuestion:\n{question}\n\nAnswer:\n{answer}\n\n"
    "Is the answer correct, complete and helpful? Reply with one integer from 1 (useless) "
    "to 10 (excellent) and nothing else."
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TargetSpec(_Spec):
    model: str | None = Field(default=None, description="a catalog model")
    policy: str | None = Field(default=None, description="a routing policy (not a cascade)")

    @model_validator(mode="after")
    def _one_target(self) -> _TargetSpec:
        if (self.model is None) == (self.policy is None):
            raise ValueError("set exactly one of 'model' or 'policy'")
        return self


class TierSpec(_TargetSpec):
    """One tier: a model (routed among its deployments) or a routed sub-policy."""

    timeout_s: float | None = Field(
        default=None, gt=0, description="escalate (tier_timeout) when the tier takes longer"
    )


class JudgeSpec(_TargetSpec):
    """A small model that grades the answer; its cost is counted in the request's."""

    prompt: str = Field(default=DEFAULT_JUDGE_PROMPT, description="{question} and {answer}")
    min_score: float = Field(default=7, description="the judge's score that accepts")
    max_tokens: int = Field(default=8, gt=0)
    on_error: Literal["accept", "escalate"] = Field(
        default="accept", description="when the judge fails or its reply holds no score"
    )

    @model_validator(mode="after")
    def _has_answer(self) -> JudgeSpec:
        if "{answer}" not in self.prompt:
            raise ValueError("prompt must contain the {answer} placeholder")
        return self


class ChecksSpec(_Spec):
    """Which acceptance checks run, with their thresholds."""

    structural: bool = Field(default=True, description="non-empty, not truncated, JSON, tools")
    refusal: bool = True
    refusal_patterns: list[str] = Field(default_factory=list, description="extra regexes")
    min_confidence: float | None = Field(
        default=None, gt=0, le=1, description="exp(mean token logprob) needed; null = off"
    )

    @field_validator("refusal_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc
        return value


class CascadeSpec(_Spec):
    """Ordered tiers, cheap first; the acceptance checks; streaming behaviour."""

    tiers: list[TierSpec] = Field(min_length=2)
    max_tiers: int | None = Field(default=None, ge=1, description="defaults to all tiers")
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    judge: JudgeSpec | None = None
    streaming: StreamingMode = "buffer"


@dataclass(frozen=True, slots=True)
class CascadeTier:
    """A tier at runtime: the model or policy name the router plans for."""

    target: str
    kind: Literal["model", "policy"]
    timeout_s: float | None


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """The judge at runtime."""

    target: str
    prompt: str
    min_score: float
    max_tokens: int
    accept_on_error: bool


@dataclass(frozen=True, slots=True)
class CascadePolicy:
    """A compiled cascade: tiers (already cut to ``max_tiers``), checks, judge, streaming."""

    tiers: tuple[CascadeTier, ...]
    structural: bool
    refusal: bool
    refusal_patterns: tuple[str, ...]
    min_confidence: float | None
    judge: JudgeConfig | None
    streaming: StreamingMode


def compile_cascade(
    where: str,
    spec: CascadeSpec,
    models: Collection[str],
    policies: Mapping[str, bool],
    problems: list[str],
) -> tuple[CascadePolicy | None, str | None]:
    """Check tier and judge targets; ``policies`` maps each policy name to "is a cascade".

    Returns the compiled cascade, or None with the reason it is disabled (a model missing
    from this catalog); problems in the cascade itself are appended to ``problems``.
    """
    ok = True
    missing: list[str] = []

    def check_target(path: str, model: str | None, policy: str | None) -> None:
        nonlocal ok
        if model is not None and model not in models:
            missing.append(f"{path} names model {model!r}, which this catalog does not define")
        if policy is not None:
            if policy not in policies:
                problems.append(f"{where}.{path}.policy: unknown policy {policy!r}")
                ok = False
            elif policies[policy]:
                problems.append(
                    f"{where}.{path}.policy: {policy!r} is itself a cascade; a tier must be a "
                    "model or a plain routing policy"
                )
                ok = False

    for i, tier in enumerate(spec.tiers):
        check_target(f"tiers.{i}", tier.model, tier.policy)
    if spec.judge is not None:
        check_target("judge", spec.judge.model, spec.judge.policy)
    count = len(spec.tiers) if spec.max_tiers is None else spec.max_tiers
    if count > len(spec.tiers):
        problems.append(
            f"{where}.max_tiers: {count} is more than the {len(spec.tiers)} tiers defined"
        )
        ok = False
    elif count < 2:
        problems.append(f"{where}.max_tiers: a cascade needs at least 2 tiers, got {count}")
        ok = False
    elif spec.tiers[count - 1].timeout_s is not None:
        problems.append(
            f"{where}.tiers.{count - 1}.timeout_s: the last tier has no tier to escalate to; "
            "its time limits are the deployments' timeouts"
        )
        ok = False
    if not ok:
        return None, None
    if missing:
        return None, "; ".join(missing)
    judge = spec.judge
    checks = spec.checks
    compiled = CascadePolicy(
        tiers=tuple(
            CascadeTier(
                target=t.model or t.policy or "",
                kind="model" if t.model else "policy",
                timeout_s=t.timeout_s,
            )
            for t in spec.tiers[:count]
        ),
        structural=checks.structural,
        refusal=checks.refusal,
        refusal_patterns=tuple(checks.refusal_patterns),
        min_confidence=checks.min_confidence,
        judge=(
            JudgeConfig(
                target=judge.model or judge.policy or "",
                prompt=judge.prompt,
                min_score=judge.min_score,
                max_tokens=judge.max_tokens,
                accept_on_error=judge.on_error == "accept",
            )
            if judge is not None
            else None
        ),
        streaming=spec.streaming,
    )
    return compiled, None
