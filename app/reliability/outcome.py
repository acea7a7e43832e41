"""What a request's walk leaves behind: the attempt log, its headers, the final error."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from app.errors import (
    AllDeploymentsFailedError,
    GatewayError,
    UpstreamContextWindowError,
    UpstreamError,
)
from app.reliability.limits import RequestLimits
from app.routing.plan import PlanEntry
from app.telemetry.record import Record


@dataclass(slots=True)
class Walk:
    """One request's passage through the reliability layer (shared by every tier it walks)."""

    request_id: str
    record: Record
    limits: RequestLimits
    deadline: float
    errors: list[UpstreamError] = field(default_factory=list)
    # Explicit prompt caching for every attempt (the policy's option); None = per deployment.
    prompt_cache: bool | None = None

    def note(self, entry: PlanEntry, exc: UpstreamError | None, *, called: bool = True) -> None:
        """Log one attempt (``called=False``: skipped without an upstream call)."""
        rec = self.record
        item: dict[str, Any] = {"deployment": entry.deployment.id}
        if called:
            rec.attempts += 1
        else:
            item["skipped"] = True
        if exc is not None:
            self.errors.append(exc)
            item["fallback_reason"] = exc.fallback_reason
            if exc.upstream_status is not None:
                item["status"] = exc.upstream_status
            if rec.fallback_reason is None:
                rec.fallback_reason = exc.fallback_reason
        rec.attempt_log.append(item)

    def headers(self) -> dict[str, str]:
        """``x-pareto-attempts`` and, when an attempt failed, ``x-pareto-fallback-reason``."""
        out = {"x-pareto-attempts": str(self.record.attempts)}
        if self.record.fallback_reason:
            out["x-pareto-fallback-reason"] = self.record.fallback_reason
        return out


def tried_summary(errors: list[UpstreamError]) -> str:
    """``a@x: upstream_5xx ×2; b@y: circuit_open`` in the order they were tried."""
    counts: dict[tuple[str, str], int] = {}
    for exc in errors:
        key = (exc.deployment or "?", exc.fallback_reason)
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(
        f"{dep}: {reason}" + (f" x{n}" if n > 1 else "") for (dep, reason), n in counts.items()
    )


def all_failed(walk: Walk) -> GatewayError:
    """The fast final answer when no deployment could serve: 503, 429, 502 or 400."""
    errors = walk.errors
    tried = tried_summary(errors) or "no deployment could be tried"
    reasons = {e.fallback_reason for e in errors}
    headers = walk.headers()
    if reasons == {"context_window"}:
        last = errors[-1]
        assert isinstance(last, UpstreamContextWindowError)
        err: GatewayError = UpstreamContextWindowError(
            "the request does not fit the context window of any deployment in the routing plan "
            f"({tried}); shorten the messages or lower max_tokens",
            deployment=last.deployment,
            upstream_status=last.upstream_status,
            param="messages",
        )
    elif reasons == {"rate_limited"}:
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        retry = max(1, math.ceil(min(waits))) if waits else 1
        err = AllDeploymentsFailedError(
            f"every deployment is rate limited upstream ({tried}); retry after {retry}s",
            status=429,
            code="all_deployments_rate_limited",
        )
        err.type = "rate_limit_error"
        headers["retry-after"] = str(retry)
    elif reasons == {"auth_failed"} or reasons == {"auth_failed", "circuit_open"}:
        err = AllDeploymentsFailedError(
            f"the gateway's credentials were rejected upstream ({tried}); this is a gateway "
            "misconfiguration, not a problem with your request",
            status=502,
            code="upstream_auth_failed",
        )
    else:
        waits = [
            e.retry_after
            for e in errors
            if e.fallback_reason == "circuit_open" and e.retry_after is not None
        ]
        retry = max(1, math.ceil(min(waits))) if waits and reasons == {"circuit_open"} else 1
        err = AllDeploymentsFailedError(
            f"every deployment in the routing plan failed ({tried}); retry after {retry}s",
        )
        headers["retry-after"] = str(retry)
    err.headers.update(headers)
    return err
