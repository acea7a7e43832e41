"""HTTP routes: thin handlers that parse, call the gateway, and render.

``/v1/chat/completions`` is not here: it is a plain ASGI endpoint (:mod:`app.api.chat`).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import read_body
from app.api.validation import parse_body, validate_chat
from app.auth import api_key_of
from app.auth.access import visible_names
from app.auth.middleware import require_admin_key
from app.catalog import ConfigError
from app.errors import GatewayError, PermissionDeniedError
from app.gateway import Gateway, RequestContext
from app.telemetry.attribution import request_attribution
from app.telemetry.record import Record

router = APIRouter()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

CHAT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string", "minLength": 1},
                        "messages": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["role", "content"],
                                "properties": {
                                    "role": {
                                        "type": "string",
                                        "enum": ["system", "user", "assistant"],
                                    },
                                    "content": {"type": "string"},
                                },
                            },
                        },
                        "stream": {"type": "boolean"},
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "temperature": {"type": "number"},
                    },
                }
            }
        },
    }
}


FEEDBACK_MAX_BYTES = 64 * 1024


async def _body(request: Request, limit: int, setting: str = "PARETO_MAX_BODY_BYTES") -> bytes:
    seconds = gateway_of(request).settings.body_timeout_s
    return await read_body(
        request.receive, request.headers, limit=limit, seconds=seconds, setting=setting
    )


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def request_id_of(request: Request) -> str:
    """The id RequestContextMiddleware picked (or a safe incoming one / a new one without it)."""
    rid: str | None = getattr(request.state, "request_id", None)
    if rid is None:
        incoming = request.headers.get("x-request-id")
        rid = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.state.request_id = rid
    return rid


@router.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    """A quality score (0-1) for a request this gateway served, stored for `pareto train`."""
    gateway = gateway_of(request)
    body = parse_body(await _body(request, FEEDBACK_MAX_BYTES, "the fixed limit of /v1/feedback"))
    receipt = await gateway.feedback.submit(body)
    return Response(orjson.dumps(receipt), media_type="application/json")


ROUTE_PATH = "/v1/route"


@router.post(ROUTE_PATH, openapi_extra=CHAT_SCHEMA)
async def route_explain(request: Request) -> Response:
    """Dry run: how a chat-completions body would be routed, and why. No model is called.

    Takes the same body and ``X-Pareto-*`` headers as ``/v1/chat/completions`` and returns
    ``features``, the resolved ``policy``, the ``plan`` and one ``candidates`` row per
    deployment (``chosen``, ``fallback``, ``dominated``, ``feasible`` or ``excluded:<reason>``).
    When nothing is feasible it answers the same ``no_feasible_deployment`` error as a chat
    request would.

    It decides with the same inputs as the chat request would: the conversation's sticky
    deployment (the session read without renewing its TTL; ``session`` in the answer) and
    the key's budget pressure (its spend read, nothing held, no rate limit charged;
    ``policy.budget_factor``).

    A dry run leaves no record, except when the caller's key is refused the model or policy
    (403): that refusal is recorded and counted like a chat request's (by key name, never the
    key), so probing for models a key may not use shows on the dashboards.
    """
    rid = request_id_of(request)
    gateway = gateway_of(request)
    settings = gateway.settings
    api_key = api_key_of(request)
    started: float = getattr(request.state, "started", None) or time.perf_counter()
    body = parse_body(await _body(request, settings.max_body_bytes))
    validate_chat(
        body, max_messages=settings.max_messages, max_content_chars=settings.max_content_chars
    )
    request_attribution(body)  # the same 400 a chat request with bad tags gets
    ctx = RequestContext(
        request_id=rid,
        headers=request.headers,
        started=started,
        record=Record(
            request_id=rid, path=ROUTE_PATH, api_key_name=api_key.name if api_key else None
        ),
        api_key=api_key,
    )
    try:
        explained = gateway.explain_cascade(body, ctx)  # None unless a cascade policy is named
        if explained is None:
            # The key's budget as chat's admission reads it, without a rate-limit charge.
            ctx.ticket = await request.app.state.guard.peek(api_key)
            explained = (await gateway.explain_route(body, ctx)).explain()
    except PermissionDeniedError as exc:
        gateway.record_failure(ctx, exc.status, exc.code or exc.type)
        raise
    return Response(orjson.dumps(explained), media_type="application/json")


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The catalog's models and the routing policies, in OpenAI's list shape."""
    catalog = gateway_of(request).catalog
    models, policies = visible_names(api_key_of(request), catalog)
    data: list[dict[str, Any]] = []
    for name in sorted(models):
        model = catalog.models[name]
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "pareto",
                "pareto": {
                    "kind": "model",
                    "quality": model.quality,
                    "context_window": model.context_window,
                    "capabilities": sorted(model.capabilities),
                    "deployments": [d.id for d in catalog.by_model[name]],
                },
            }
        )
    for name in sorted(policies):
        policy = catalog.policies[name]
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "pareto",
                "pareto": {"kind": "policy", "description": policy.description},
            }
        )
    return Response(
        content=orjson.dumps({"object": "list", "data": data}),
        media_type="application/json",
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when the catalog is loaded and Redis (if configured) answers."""
    state = request.app.state
    checks: dict[str, str] = {"catalog": "ok" if state.gateway.catalog else "missing"}
    ready = True
    redis = getattr(state, "redis", None)
    if redis is not None:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any Redis failure means not ready
            checks["redis"] = f"unreachable: {type(exc).__name__}"
            ready = False
    sessions = state.gateway.sessions.status()
    if sessions is None:
        checks["sessions"] = "off"
    else:
        # Never a reason to be unready: requests are served without Redis (local store).
        checks["sessions"] = (
            f"{sessions.backend} (degraded: local store)" if sessions.degraded else sessions.backend
        )
    # Never a reason to be unready either: breakers fall back to per-process state.
    checks["breakers"] = state.gateway.failover.breakers.describe()
    return Response(
        orjson.dumps({"status": "ready" if ready else "not_ready", "checks": checks}),
        status_code=200 if ready else 503,
        media_type="application/json",
    )


@router.post("/admin/reload")
async def admin_reload(request: Request) -> Response:
    """Reload the config now; an invalid config is rejected and the old one stays."""
    require_admin_key(request)
    try:
        catalog = request.app.state.reloader.reload()
    except ConfigError as exc:
        raise GatewayError(
            "the new config is invalid and was not applied: " + "; ".join(exc.problems),
            status=400,
            code="invalid_config",
        ) from exc
    return Response(
        orjson.dumps({"status": "reloaded", "deployments": len(catalog.deployments)}),
        media_type="application/json",
    )
