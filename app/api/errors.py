"""Every error leaves the gateway as an OpenAI-shaped JSON body with the right status."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import GatewayError, error_body

log = structlog.get_logger("pareto.api")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(err: GatewayError, request_id: str | None = None) -> Response:
    headers = dict(err.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(
        err.to_json(), status_code=err.status, headers=headers, media_type="application/json"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map framework and unexpected errors into the OpenAI error shape."""

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc, getattr(request.state, "request_id", None))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; the API lives under /v1"
            code = "not_found"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
            code = "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        return Response(
            error_body(message, _STATUS_TYPES.get(exc.status_code, "server_error"), code),
            status_code=exc.status_code,
            media_type="application/json",
            headers=dict(exc.headers or {}),
        )

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        return Response(
            error_body(f"{loc}: {first['msg']}", "invalid_request_error", "invalid_request", loc),
            status_code=400,
            media_type="application/json",
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled_error", error_type=type(exc).__name__, path=request.url.path)
        return Response(
            error_body(
                "the gateway hit an internal error; it has been logged with this request's id",
                "server_error",
                "internal_error",
            ),
            status_code=500,
            media_type="application/json",
        )

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
