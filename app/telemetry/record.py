"""The telemetry record: one per request, filled along its path, emitted once at the end.

Each stage of the request's path fills its own fields (routing: ``router_policy``,
``quality_floor``, ``est_cost_usd``, ``routing_ms``; reliability: ``attempts``,
``attempt_log``, ``fallback_reason``; sessions: ``session_sticky``,
``session_switch_reason``; cascade: ``escalation_reason``, ``tiers``; auth:
``api_key_name``; the client's attribution: ``user_id``, ``tags``; the gateway: the served
deployment, usage, cost and timings). The emitter (:mod:`app.telemetry.emit`) turns the
finished record into one log line and every metric; see :mod:`app.telemetry.metrics` for
how each field is counted (``user_id`` and ``tags`` only reach the log line: unbounded
values are never metric labels).

A request that authentication refuses (a gateway key on any ``/v1/`` path, the admin key on
``/admin/``) gets a record too, built by :func:`app.auth.middleware.refusal_record`: its
``status`` and ``user_visible_error`` (the error code), ``path``, and which key it was, by
name when the gateway knows it or by ``api_key_fingerprint`` — never the key, never a body.
A key refused a model or policy (403) is recorded by name through ``Gateway.record_failure``,
on ``/v1/chat/completions`` and on the ``/v1/route`` dry run (whose answered runs leave none).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class Record:
    """Everything an operator needs to judge one routing decision (see README, Telemetry)."""

    request_id: str
    router_policy: str | None = None
    quality_floor: float | None = None
    provider: str | None = None
    model: str | None = None
    deployment: str | None = None
    stream: bool = False
    input_tokens: int = 0
    cached_input_tokens: int = 0
    # Input tokens written to the provider's prompt cache (Anthropic), billed above input.
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    cache_hit: bool = False
    usage_counted_by_gateway: bool = False
    ttft_ms: float | None = None
    decode_tps: float | None = None
    total_latency_ms: float = 0.0
    # total_latency_ms minus upstream_ms minus client_wait_ms: what the gateway itself costs.
    gateway_overhead_ms: float | None = None
    # Wall time spent waiting on upstreams (every attempt, failed ones included).
    upstream_ms: float = 0.0
    # Streams: wall time spent handing chunks to a client that had not taken the last one yet.
    client_wait_ms: float = 0.0
    routing_ms: float | None = None
    cost_usd: float = 0.0
    est_cost_usd: float | None = None
    fallback_reason: str | None = None
    attempts: int = 0
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    escalation_reason: str | None = None
    tiers: list[dict[str, Any]] = field(default_factory=list)
    session_sticky: bool | None = None
    session_switch_reason: str | None = None
    status: int = 200
    user_visible_error: str | None = None
    client_disconnected: bool = False
    api_key_name: str | None = None
    # A refused key (401): ``sha256:`` + the first 12 hex digits of its hash, never the key.
    api_key_fingerprint: str | None = None
    # The chat endpoint emits every record except refusals on other paths (auth, /v1/route).
    path: str = "/v1/chat/completions"
    # The client's own attribution (pareto.user_id / pareto.tags), for the log line only.
    user_id: str | None = None
    tags: dict[str, str] | list[str] | None = None
    # The request's messages: set only when PARETO_LOG_PROMPTS is on (a debug setting).
    prompt: Any = None

    def as_dict(self) -> dict[str, Any]:
        """Every field, shallow (the log renderer serialises nested lists as they are)."""
        return dict(zip(RECORD_FIELDS, _all_fields(self), strict=True))

    def finish_timing(self, total_latency_s: float) -> None:
        """Set the total latency and derive the gateway's own overhead from it."""
        self.total_latency_ms = total_latency_s * 1000
        self.gateway_overhead_ms = max(
            0.0, self.total_latency_ms - self.upstream_ms - self.client_wait_ms
        )


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Record))
_all_fields = operator.attrgetter(*RECORD_FIELDS)
