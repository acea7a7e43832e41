"""Pure-ASGI middleware: every ``/v1/`` request is authenticated before any handler runs.

Doing it here, not in each handler, means an endpoint added later cannot forget it. The
result (an :class:`ApiKey`, or ``None`` when auth is off) is left in ``scope["state"]`` for
the handlers, read back with :func:`api_key_of`.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.authenticate import Authenticator
from app.auth.config import ApiKey
from app.errors import GatewayError

log = structlog.get_logger("pareto.auth")

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
        try:
            key = await authenticate_headers(
                scope["app"].state.authenticator, {"authorization": authorization}, scope["path"]
            )
        except GatewayError as exc:
            await _send_error(send, exc)
            return
        scope.setdefault("state", {})[_STATE_KEY] = key
        await self.app(scope, receive, send)


async def authenticate_headers(
    authenticator: Authenticator, headers: Mapping[str, str | None], path: str
) -> ApiKey | None:
    """The caller's key from its ``Authorization`` header (None = auth is off); a rejection
    is logged (code only, never the key) and raised as the GatewayError to answer with."""
    try:
        return await authenticator.authenticate(headers.get("authorization"))
    except GatewayError as exc:
        # No record is built for a rejected key; this line keeps key-guessing visible.
        log.warning("auth_rejected", status=exc.status, code=exc.code, path=path)
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
