"""``create_app(settings)``: builds the process's clients, stores and catalog in lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from app.api.admin import router as admin_router
from app.api.chat import PATH as CHAT_PATH
from app.api.chat import ChatEndpoint
from app.api.errors import install_error_handlers
from app.api.metrics import router as metrics_router
from app.api.routes import CHAT_SCHEMA, router
from app.auth import AuthMiddleware, log_auth_state
from app.auth.setup import install_auth
from app.catalog import Catalog, load_catalog, log_disabled
from app.catalog.reload import Reloader
from app.fastredis import FastRedis, parse_address
from app.feedback import build_feedback
from app.gateway import Gateway
from app.providers import ProviderRegistry
from app.providers.http import make_backend
from app.reliability import build_breakers
from app.sessions import build_sessions
from app.settings import Settings, load_settings
from app.telemetry.emit import RecordSink
from app.telemetry.logging import configure_logging
from app.telemetry.metrics import Metrics
from app.telemetry.middleware import RequestContextMiddleware

log = structlog.get_logger("pareto")
HOT_NAME = "pareto-hot"  # CLIENT LIST names the hot-path connections


async def _connect_at_start(hot: FastRedis) -> None:
    """Open the hot-path connection now, so a wrong URL, certificate or password is logged
    at start, saying what to fix, instead of showing later as degraded sessions and 503s.
    Not fatal: Redis may come up after the gateway (the client reconnects on use)."""
    try:
        await hot.connection()
    except RedisError as exc:
        log.error(
            "redis_connect_failed",
            redis=hot.address.where,
            tls=hot.address.tls is not None,
            error=type(exc).__name__,
            detail=str(exc),
        )


class GatewayApp(FastAPI):
    """FastAPI for every endpoint but the hot one: ``/v1/chat/completions`` goes straight to
    :class:`~app.api.chat.ChatEndpoint`, past the router and the middleware stack (which it
    does the work of inline), because every request the gateway serves pays for that path."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._chat = ChatEndpoint(self.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH:
            await self._chat(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema plus the chat endpoint it does not route (for docs and fuzzing)."""
        if self.openapi_schema is None:
            schema = super().openapi()
            schema["paths"][CHAT_PATH] = {
                "post": {
                    "summary": "Chat Completions",
                    "description": "OpenAI-compatible chat completions, streaming or not.",
                    "operationId": "chat_completions_v1_chat_completions_post",
                    **CHAT_SCHEMA,
                    "responses": {
                        "200": {
                            "description": "a chat.completion object, or with stream: true an "
                            "SSE stream of chat.completion.chunk events ending with [DONE]",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        }
                    },
                }
            }
            self.openapi_schema = schema
        return self.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. The config is validated here, so an invalid one fails fast."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    catalog = load_catalog(settings.config)
    metrics = Metrics()
    metrics.prepare(catalog)
    metrics.set_budget(settings.spend_budget_usd_per_hour)
    # Read now (TLS files included), so a wrong PARETO_REDIS_URL stops the start.
    redis_address = parse_address(settings.redis_url) if settings.redis_url else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_backend(
            settings.http_client, settings.http_max_connections, settings.http_keepalive_s
        )
        providers = ProviderRegistry(client, settings.simulated_base_url)
        sink = RecordSink(metrics, enabled=settings.telemetry)
        gateway = Gateway(settings, catalog, providers, emit=sink)
        gateway.metrics = metrics
        app.state.gateway = gateway
        app.state.record_sink = sink  # also for requests refused before the gateway (auth)
        redis = (
            aioredis.Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s,
            )
            if settings.redis_url
            else None
        )
        # The per-request calls (sessions, limits, budgets) go through the hot-path client.
        hot = (
            FastRedis(redis_address, timeout_s=settings.redis_timeout_s, client_name=HOT_NAME)
            if redis_address is not None
            else None
        )
        if hot is not None:
            await _connect_at_start(hot)
        app.state.redis = redis
        app.state.hot_redis = hot
        gateway.redis = redis
        gateway.sessions = build_sessions(settings, hot)
        gateway.failover.breakers = build_breakers(settings, redis, on_open=metrics.breaker_opened)
        gateway.feedback = build_feedback(settings, redis)
        install_auth(app.state, lambda: gateway.catalog.auth, settings, redis, hot)

        def apply(new: Catalog) -> None:
            gateway.swap_catalog(new)
            metrics.prepare(new)
            log_auth_state(new.auth, str(settings.config), shared=redis is not None)

        def redis_degraded() -> bool:
            status = gateway.sessions.status()
            degraded = status is not None and status.degraded
            return degraded or gateway.failover.breakers.redis_degraded

        metrics.track_breakers(lambda: gateway.failover.breakers.states())
        metrics.track_redis(redis_degraded)
        refresher = asyncio.create_task(metrics.keep_fresh())
        reloader = Reloader(settings.config, apply)
        app.state.reloader = reloader
        reloader.install_sighup()
        log_disabled(catalog)
        watcher = (
            asyncio.create_task(reloader.watch(settings.watch_interval_s))
            if settings.watch_config
            else None
        )
        log.info(
            "gateway_started", config=str(settings.config), deployments=len(catalog.deployments)
        )
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await providers.aclose()
            await client.aclose()
            # Releases of holds whose outcome was unknown, before their connection goes.
            await app.state.guard.aclose(wait_s=2 * settings.redis_timeout_s)
            if hot is not None:
                await hot.aclose()
            if redis is not None:
                await redis.aclose()
            metrics.close()

    app = GatewayApp(
        title="Pareto Gateway",
        version="0.1.0",
        description="OpenAI-compatible LLM routing gateway",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(metrics_router)
    app.add_middleware(AuthMiddleware)
    # Added last = outermost: auth errors carry the request id too.
    app.add_middleware(RequestContextMiddleware)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory app.main:app_from_env`` (used by multi-worker serve)."""
    return create_app(load_settings())
