"""Pure-ASGI middleware: every ``/v1/`` request is authenticated before any handler runs.

Doing it here, not in each handler, means an endpoint added later cannot forget it. The
result (an :class:`ApiKey`, or ``None`` when auth is off) is left in ``scope["state"]`` for
the handlers, read back with :func:`api_key_of`.

A refused request never reaches a handler, so it is recorded here: one telemetry record
(:func:`refusal_record`) through the app's record sink (``app.state.record_sink``), which
makes it a ``"request"`` log line and a ``pareto_requests_total`` count with its status (401,
or 503 when the key store is unreachable). A flood of bad keys is visible on the dashboards
and in the log; the record names the key by name when the gateway knows it (revoked) or by
a short prefix of its hash, never the key, and holds no part of the body. The chat endpoint
(:mod:`app.api.chat`) and the admin routes (:func:`require_admin_key`) go through the same
path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.admin import require_admin
from app.auth.authenticate import Authenticator, key_fingerprint
from app.auth.config import ApiKey
from app.errors import AuthenticationError, GatewayError
from app.telemetry.middleware import request_id_from
from app.telemetry.record import Record

Emit = Callable[[Record], None]

_STATE_KEY = "pareto_api_key"
_PROTECTED = "/v1/"
_WWW_AUTH = (b"www-authenticate", b'Bearer realm="pareto"')


class AuthMiddleware:
    """Authenticates ``/v1/*``; the app's lifespan puts the :class:`Authenticator` on
    ``app.state.authenticator``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_PROTECTED):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        state = scope["app"].state
        # RequestContextMiddleware (outermost) picked the request id and arrival time.
        known = scope.get("state") or {}
        try:
            key = await authenticate_headers(
                state.authenticator,
                {"authorization": authorization},
                scope["path"],
                request_id=known.get("request_id") or request_id_from(scope["headers"]),
                started=known.get("started") or time.perf_counter(),
                emit=state.record_sink,
            )
        except GatewayError as exc:
            await _send_error(send, exc)
            return
        scope.setdefault("state", {})[_STATE_KEY] = key
        await self.app(scope, receive, send)


def refusal_record(
    exc: GatewayError,
    *,
    request_id: str,
    path: str,
    started: float,
    authorization: str | None,
) -> Record:
    """The record of a request refused before any handler ran (status, code, path, which
    key: its name if known, else its fingerprint). Latency is kept, overhead is not: a flood
    of refusals must not pull the served requests' overhead histogram down."""
    record = Record(
        request_id=request_id,
        path=path,
        status=exc.status,
        user_visible_error=exc.code or exc.type,
        api_key_name=exc.key_name if isinstance(exc, AuthenticationError) else None,
        api_key_fingerprint=key_fingerprint(authorization),
    )
    record.total_latency_ms = (time.perf_counter() - started) * 1000
    return record


async def authenticate_headers(
    authenticator: Authenticator,
    headers: Mapping[str, str | None],
    path: str,
    *,
    request_id: str,
    started: float,
    emit: Emit,
) -> ApiKey | None:
    """The caller's key from its ``Authorization`` header (None = auth is off); a refusal
    is recorded (:func:`refusal_record`, through ``emit``) and raised as the GatewayError
    to answer with."""
    authorization = headers.get("authorization")
    try:
        return await authenticator.authenticate(authorization)
    except GatewayError as exc:
        emit(
            refusal_record(
                exc,
                request_id=request_id,
                path=path,
                started=started,
                authorization=authorization,
            )
        )
        raise


def require_admin_key(request: Request) -> None:
    """:func:`~app.auth.admin.require_admin` for an ``/admin/`` route, its refusals (401
    wrong key, 403 admin disabled) recorded like a refused gateway key."""
    state = request.app.state
    authorization = request.headers.get("authorization")
    try:
        require_admin(authorization, state.gateway.settings.admin_key)
    except GatewayError as exc:
        known = request.scope.get("state") or {}
        state.record_sink(
            refusal_record(
                exc,
                request_id=known.get("request_id") or request_id_from(request.scope["headers"]),
                path=request.url.path,
                started=known.get("started") or time.perf_counter(),
                authorization=authorization,
            )
        )
        raise


def auth_error_headers(exc: GatewayError) -> list[tuple[bytes, bytes]]:
    """An error's own headers, plus the Bearer challenge on a 401."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    if exc.status == 401:
        headers.append(_WWW_AUTH)
    return headers


async def _send_error(send: Send, exc: GatewayError) -> None:
    body = exc.to_json()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *auth_error_headers(exc),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def api_key_of(request: Request) -> ApiKey | None:
    """The caller's key (``None`` = auth is off). Fails loudly if the middleware did not run."""
    state = request.scope.get("state") or {}
    if _STATE_KEY not in state:
        raise RuntimeError("AuthMiddleware did not run for this request")
    key: ApiKey | None = state[_STATE_KEY]
    return key
