"""Per-attempt limits and the retry policy, resolved from settings, policy and deployment.

Precedence: a timeout set on the policy (``policies.<name>.reliability``) and on the
deployment — the tighter one wins; neither set — the process default (``PARETO_*``).
Retry counts and backoff come from the policy, else the process default.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.catalog.model import Deployment, Policy
from app.catalog.spec import ReliabilitySpec
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Defaults:
    """The process-wide defaults (from :class:`~app.settings.Settings`), built once."""

    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 30.0
    total_timeout_s: float = 600.0
    request_timeout_s: float = 900.0
    max_retries: int = 1
    retry_backoff_s: float = 0.1
    retry_backoff_max_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Defaults:
        return cls(
            connect_timeout_s=settings.connect_timeout_s,
            first_token_timeout_s=settings.first_token_timeout_s,
            total_timeout_s=settings.total_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
            retry_backoff_s=settings.retry_backoff_s,
            retry_backoff_max_s=settings.retry_backoff_max_s,
        )


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may spend: its deadline, and retries per deployment."""

    request_timeout_s: float
    max_retries: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    policy: ReliabilitySpec | None


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """Timeouts of one attempt at one deployment."""

    connect_s: float
    first_token_s: float
    total_s: float


def _tightest(policy: float | None, deployment: float | None, default: float) -> float:
    if policy is None:
        return deployment if deployment is not None else default
    return policy if deployment is None else min(policy, deployment)


def request_limits(defaults: Defaults, policy: Policy | None) -> RequestLimits:
    """The request-level limits of a policy (or the defaults when the client named a model)."""
    spec = policy.reliability if policy is not None else None
    if spec is None:
        return RequestLimits(
            defaults.request_timeout_s,
            defaults.max_retries,
            defaults.retry_backoff_s,
            defaults.retry_backoff_max_s,
            None,
        )
    return RequestLimits(
        request_timeout_s=spec.request_timeout_s or defaults.request_timeout_s,
        max_retries=defaults.max_retries if spec.max_retries is None else spec.max_retries,
        retry_backoff_s=(
            defaults.retry_backoff_s if spec.retry_backoff_s is None else spec.retry_backoff_s
        ),
        retry_backoff_max_s=defaults.retry_backoff_max_s,
        policy=spec,
    )


def attempt_limits(defaults: Defaults, limits: RequestLimits, dep: Deployment) -> AttemptLimits:
    """Timeouts for one attempt at ``dep`` under the request's policy."""
    p = limits.policy
    return AttemptLimits(
        connect_s=_tightest(
            p.connect_timeout_s if p else None, dep.connect_timeout_s, defaults.connect_timeout_s
        ),
        first_token_s=_tightest(
            p.first_token_timeout_s if p else None,
            dep.first_token_timeout_s,
            defaults.first_token_timeout_s,
        ),
        total_s=_tightest(
            p.total_timeout_s if p else None, dep.total_timeout_s, defaults.total_timeout_s
        ),
    )
