"""The telemetry record: one per request, filled along its path, emitted once at the end."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    output_tokens: int = 0
    cache_hit: bool = False
    usage_counted_by_gateway: bool = False
    ttft_ms: float | None = None
    decode_tps: float | None = None
    total_latency_ms: float = 0.0
    gateway_overhead_ms: float | None = None
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
