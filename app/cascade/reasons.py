"""The closed vocabulary of escalation reasons (code, telemetry, headers and docs use it).

Distinct from :data:`app.errors.FALLBACK_REASONS`: a fallback means a deployment failed, an
escalation means a tier answered but the answer was not good enough (or not in time).
"""

from __future__ import annotations

from typing import Final, Literal

EscalationReason = Literal[
    "low_confidence",
    "invalid_json",
    "schema_mismatch",
    "refusal",
    "truncated",
    "judge_rejected",
    "tier_timeout",
]

ESCALATION_REASONS: Final[tuple[EscalationReason, ...]] = (
    "low_confidence",
    "invalid_json",
    "schema_mismatch",
    "refusal",
    "truncated",
    "judge_rejected",
    "tier_timeout",
)
