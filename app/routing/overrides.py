"""Per-request routing overrides, from ``X-Pareto-*`` headers or the body's ``"pareto"`` object.

The body object (what OpenAI SDKs send through ``extra_body``) uses the same names as the
headers without the ``x-pareto-`` prefix and with underscores::

    x-pareto-policy            "policy":         a policy name
    x-pareto-quality-floor     "quality_floor":  0..100
    x-pareto-max-cost-usd      "max_cost_usd":   > 0
    x-pareto-max-latency-ms    "max_latency_ms": > 0
    x-pareto-lambda-cost       "lambda_cost":    >= 0, quality points per USD
    x-pareto-lambda-latency    "lambda_latency": >= 0, quality points per second

A header wins over the body. Any bad value raises :class:`InvalidRequestError` (400) naming
the field, the value and what is accepted. The object's other keys are read elsewhere and
listed in :data:`EXTRA_BODY_KEYS` so they are not rejected here: ``session_id``
(:mod:`app.sessions.keys`), ``user_id`` and ``tags`` (:mod:`app.telemetry.attribution`).
Every other key is a 400: a key that is accepted and then ignored would hide a client's typo
or a feature the gateway does not have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from app.errors import InvalidRequestError

# body key -> (header, lower bound, bound inclusive, upper bound)
_NUMERIC: Final[dict[str, tuple[str, float, bool, float | None]]] = {
    "quality_floor": ("x-pareto-quality-floor", 0.0, True, 100.0),
    "max_cost_usd": ("x-pareto-max-cost-usd", 0.0, False, None),
    "max_latency_ms": ("x-pareto-max-latency-ms", 0.0, False, None),
    "lambda_cost": ("x-pareto-lambda-cost", 0.0, True, None),
    "lambda_latency": ("x-pareto-lambda-latency", 0.0, True, None),
}
OVERRIDE_KEYS: Final[tuple[str, ...]] = ("policy", *_NUMERIC)
# Body keys read by other parts of the gateway (sessions, attribution): accepted, not read here.
EXTRA_BODY_KEYS: Final[frozenset[str]] = frozenset({"session_id", "tags", "user_id"})
POLICY_HEADER: Final = "x-pareto-policy"
_HEADERS: Final = (POLICY_HEADER, *(header for header, *_ in _NUMERIC.values()))


@dataclass(frozen=True, slots=True)
class Overrides:
    """A request's overrides; ``None`` means "use the policy's value"."""

    policy: str | None = None
    quality_floor: float | None = None
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    lambda_cost: float | None = None
    lambda_latency: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OVERRIDE_KEYS if getattr(self, k) is not None}


NO_OVERRIDES: Final = Overrides()


def _number(value: Any, where: str, low: float, inclusive: bool, high: float | None) -> float:
    if isinstance(value, bool):
        number = math.nan
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
    else:
        number = math.nan
    ok = math.isfinite(number) and (number >= low if inclusive else number > low)
    if ok and high is not None:
        ok = number <= high
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {low:g}"
        if high is not None:
            bound = f"between {low:g} and {high:g}"
        raise InvalidRequestError(
            f"{where} must be a number {bound}, got {value!r}",
            param=where,
            code="invalid_routing_override",
        )
    return number


def parse_overrides(headers: Mapping[str, str], body: Mapping[str, Any]) -> Overrides:
    """Overrides from headers (case-insensitive mapping) and ``body["pareto"]``."""
    raw = body.get("pareto")
    if raw is None and not any(map(headers.__contains__, _HEADERS)):
        return NO_OVERRIDES  # the common case, decided without parsing
    extra: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    if raw is not None and not isinstance(raw, dict):
        raise InvalidRequestError(
            "'pareto' must be an object of routing overrides such as "
            '{"policy": "cheap", "quality_floor": 40}',
            param="pareto",
            code="invalid_routing_override",
        )
    for key in extra:
        if key not in OVERRIDE_KEYS and key not in EXTRA_BODY_KEYS:
            raise InvalidRequestError(
                f"'pareto.{key}' is not a routing override; use one of "
                f"{', '.join((*OVERRIDE_KEYS, *sorted(EXTRA_BODY_KEYS)))}",
                param=f"pareto.{key}",
                code="invalid_routing_override",
            )
    values: dict[str, Any] = {}
    policy = headers.get(POLICY_HEADER)
    if policy is None and "policy" in extra:
        policy = extra["policy"]
        if not isinstance(policy, str) or not policy:
            raise InvalidRequestError(
                f"pareto.policy must be a policy name, got {policy!r}",
                param="pareto.policy",
                code="invalid_routing_override",
            )
    if policy is not None:
        values["policy"] = policy.strip()
    for key, (header, low, inclusive, high) in _NUMERIC.items():
        value = headers.get(header)
        if value is not None:
            values[key] = _number(value, header, low, inclusive, high)
        elif key in extra and extra[key] is not None:
            values[key] = _number(extra[key], f"pareto.{key}", low, inclusive, high)
    if not values:
        return NO_OVERRIDES
    return Overrides(**values)
