"""Process settings, read from the environment (``PARETO_`` prefix) by pydantic-settings.

Nothing here is read at import time: :func:`load_settings` is called by the CLI or by
``create_app`` and the result is passed down explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


class Settings(BaseSettings):
    """Gateway settings. Every field can be set as ``PARETO_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="PARETO_", extra="ignore")

    config: Path = Field(default=DEFAULT_CONFIG, description="Catalog/policy YAML to load")
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db; unset = in-memory"
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        description="Per-operation Redis timeout (includes waiting for a busy event loop)",
    )
    sessions_enabled: bool = Field(
        default=True, description="Session stickiness; false = route every turn afresh"
    )
    session_ttl_s: float = Field(
        default=600.0, gt=0, description="Idle time after which a session is forgotten"
    )
    session_key_prefix: str = Field(default="pareto:session:", description="Redis key prefix")
    session_use_user_field: bool = Field(
        default=True, description="Use the OpenAI `user` field as the session key"
    )
    session_memory_max_entries: int = Field(
        default=100_000, gt=0, description="Bound of the in-memory session store (LRU)"
    )
    session_redis_retry_s: float = Field(
        default=1.0, gt=0, description="After a Redis failure, use the local store this long"
    )
    feedback_path: Path | None = Field(
        default=None,
        description="JSONL file POST /v1/feedback appends to (read by `pareto train`); "
        "unset = feedback off",
    )
    feedback_window: int = Field(
        default=5000, gt=0, description="Recent requests kept in memory for feedback"
    )
    feedback_ttl_s: float = Field(
        default=3600.0, gt=0, description="How long a request accepts feedback"
    )
    feedback_key_prefix: str = Field(default="pareto:feedback:", description="Redis key prefix")
    feedback_dim: int = Field(
        default=1 << 17, gt=0, description="Hashed feature buckets stored with feedback"
    )
    log_level: str = "info"
    log_prompts: bool = Field(default=False, description="Debug only: log prompt text")
    telemetry: bool = Field(
        default=True, description="Request log lines and metrics (off only to measure their cost)"
    )
    spend_budget_usd_per_hour: float | None = Field(
        default=None, gt=0, description="Exported for the spend-rate alert"
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(
        default=32 * 1024, gt=0, description="request line + headers (431 above; pareto serve)"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="time to send the headers (408 after; pareto serve)"
    )
    body_timeout_s: float = Field(default=30.0, gt=0, description="time to send the body (408)")
    max_messages: int = Field(default=2048, gt=0)
    max_content_chars: int = Field(default=2_000_000, gt=0, description="Total characters of text")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=600.0, gt=0)
    # Reliability (README, Reliability): retries, per-request deadline, circuit breakers.
    request_timeout_s: float = Field(default=900.0, gt=0, description="whole-request deadline")
    max_retries: int = Field(default=1, ge=0, le=10, description="re-attempts per deployment")
    retry_backoff_s: float = Field(default=0.1, ge=0, description="first backoff (jittered)")
    retry_backoff_max_s: float = Field(default=2.0, ge=0)
    breaker_failures: int = Field(default=5, gt=0, description="consecutive failures to open")
    breaker_error_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window_s: float = Field(default=30.0, gt=0)
    breaker_min_requests: int = Field(default=20, gt=0)
    breaker_open_s: float = Field(default=15.0, gt=0, description="open time before a probe")
    breaker_sync_s: float = Field(
        default=1.0, ge=0, description="most staleness of a closed breaker's shared state"
    )
    breaker_redis_prefix: str = Field(default="pareto:", description="Redis key prefix")
    http_client: Literal["http1", "aiohttp", "httpx"] = Field(
        default="http1",
        description="Upstream HTTP backend: http1 (lean built-in client, cheapest per call), "
        "aiohttp, or httpx (mockable with respx)",
    )
    http_max_connections: int = Field(default=512, gt=0)
    http_keepalive_s: float = Field(
        default=4.0,
        gt=0,
        description="Longest idle time after which a pooled upstream connection is still "
        "reused: below the upstream's own keep-alive timeout (5 s for uvicorn, Node, Apache), "
        "so a request is not sent on a connection the upstream is closing",
    )
    watch_config: bool = Field(default=True, description="Reload the config when its file changes")
    watch_interval_s: float = Field(default=2.0, gt=0)
    simulated_base_url: str | None = Field(
        default=None,
        description="Serve kind: simulated deployments through a `pareto simulate` server at "
        "this URL (e.g. http://upstream:9000/v1) instead of in-process",
    )
    admin_key: str | None = Field(default=None, description="Bearer key for /admin endpoints")
    auth_key_prefix: str = Field(
        default="pareto:auth:", description="Redis prefix for run-time keys, limits, budgets"
    )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (CLI flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
