"""The gateway's one exception tree.

Every error the gateway can show a client is a :class:`GatewayError`. Each class knows its
HTTP status, its OpenAI error ``type`` and ``code``, and whether another attempt may help.
Foreign exceptions (httpx, redis, json) are translated at the boundary where they happen,
with ``raise ... from exc``; nothing else reaches the client.

::

    GatewayError
    ├── InvalidRequestError            400  invalid_request_error   (client must fix the body)
    │   ├── BodyTooLargeError          413
    │   ├── RequestTimeoutError        408  (the client was too slow sending its body)
    │   └── ContentSizeError           400  (message count / content size limits)
    ├── ModelNotFoundError             404  model_not_found
    ├── FeedbackDisabledError          404  feedback_disabled        (PARETO_FEEDBACK_PATH unset)
    ├── RequestNotFoundError           404  request_not_found        (feedback for an unknown id)
    ├── NoFeasibleDeploymentError      400  no_feasible_deployment
    ├── AuthenticationError            401  invalid_api_key
    ├── PermissionDeniedError          403  model_not_allowed
    ├── BudgetExceededError            402  budget_exceeded
    ├── RateLimitExceededError         429  rate_limit_exceeded     (the gateway's own limit)
    ├── LimitsUnavailableError         503  limits_unavailable      (Redis down: fail closed)
    ├── KeyConflictError               409  key_exists / static_key (admin: /admin/keys)
    ├── KeyNotFoundError               404  key_not_found           (admin: /admin/keys)
    ├── AllDeploymentsFailedError      503 / 429                    (every attempt failed)
    └── UpstreamError                  an attempt at a deployment failed; carries
        │                              ``fallback_reason`` (closed vocabulary, see below)
        ├── UpstreamRateLimitedError   429  rate_limited            retryable
        ├── UpstreamServerError        502  upstream_5xx            retryable
        ├── UpstreamTimeoutError       504  timeout_*               retryable
        ├── UpstreamConnectionError    502  connection_error        retryable (the same
        │                                                           deployment only if the
        │                                                           request never left)
        ├── UpstreamContextWindowError 400  context_window          retryable elsewhere
        ├── UpstreamAuthError          502  auth_failed             retryable elsewhere
        ├── CircuitOpenError           503  circuit_open            retryable elsewhere
        ├── UpstreamInvalidResponse    502  invalid_response        retryable
        └── UpstreamBadRequestError    400  (client's fault)        never retried

Offline tools (``pareto eval`` / ``pareto train``) and start-up configuration have their own
small tree, never shown to an HTTP client::

    OfflineError
    ├── DatasetError       a dataset, model table or feedback file cannot be read
    └── RouterFileError    a learned-router file is missing, corrupt or of another version
"""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson

FallbackReason = Literal[
    "rate_limited",
    "upstream_5xx",
    "timeout_connect",
    "timeout_first_token",
    "timeout_total",
    "connection_error",
    "context_window",
    "auth_failed",
    "circuit_open",
    "invalid_response",
]

FALLBACK_REASONS: Final[tuple[str, ...]] = (
    "rate_limited",
    "upstream_5xx",
    "timeout_connect",
    "timeout_first_token",
    "timeout_total",
    "connection_error",
    "context_window",
    "auth_failed",
    "circuit_open",
    "invalid_response",
)


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_body())


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Serialise an OpenAI-shaped error body for errors raised outside the tree."""
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


class InvalidRequestError(GatewayError):
    """The request body is wrong; the message says which field and how to fix it."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BodyTooLargeError(InvalidRequestError):
    status = 413
    code = "request_too_large"


class RequestTimeoutError(InvalidRequestError):
    status = 408
    code = "request_timeout"


class ContentSizeError(InvalidRequestError):
    code = "content_too_large"


class ModelNotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class FeedbackDisabledError(GatewayError):
    """``POST /v1/feedback`` on a gateway that stores no feedback."""

    status = 404
    type = "invalid_request_error"
    code = "feedback_disabled"


class RequestNotFoundError(GatewayError):
    """Feedback names a request id the gateway does not (or no longer) remember."""

    status = 404
    type = "invalid_request_error"
    code = "request_not_found"


class NoFeasibleDeploymentError(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "no_feasible_deployment"


class AuthenticationError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    # The refused key's name when the gateway knows it (a revoked key): for the refusal's
    # record (app.auth.middleware), never part of the response.
    key_name: str | None = None


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class BudgetExceededError(GatewayError):
    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class RateLimitExceededError(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class LimitsUnavailableError(GatewayError):
    """The rate-limit / budget store cannot be reached; limits fail closed (real money)."""

    status = 503
    type = "server_error"
    code = "limits_unavailable"
    retryable = True


class KeyConflictError(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "key_exists"


class KeyNotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "key_not_found"


class AllDeploymentsFailedError(GatewayError):
    """Every deployment in the plan failed or was skipped (503, or 429 if all were 429s)."""

    status = 503
    type = "server_error"
    code = "all_deployments_failed"


class UpstreamError(GatewayError):
    """One attempt at one deployment failed. ``fallback_reason`` names why."""

    status = 502
    type = "upstream_error"
    fallback_reason: str = "upstream_5xx"
    retryable = True
    # Whether the same deployment may be tried again (vs. only another deployment).
    retry_same: bool = True

    def __init__(
        self,
        message: str,
        *,
        deployment: str | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.deployment = deployment
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamRateLimitedError(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"
    fallback_reason = "rate_limited"


class UpstreamServerError(UpstreamError):
    code = "upstream_error"
    fallback_reason = "upstream_5xx"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"
    fallback_reason = "timeout_total"

    def __init__(self, message: str, *, reason: str = "timeout_total", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.fallback_reason = reason


class UpstreamConnectionError(UpstreamError):
    """The connection failed or broke. ``request_sent`` says whether the request may have
    reached the upstream: if it may have, the same deployment is not tried again (only
    another one, as after a timeout), since a replay could run and bill the generation
    twice; a request that provably never left (connect failed) may be."""

    code = "upstream_connection_error"
    fallback_reason = "connection_error"

    def __init__(self, message: str, *, request_sent: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_sent = request_sent
        self.retry_same = not request_sent


class UpstreamContextWindowError(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"
    fallback_reason = "context_window"
    retry_same = False


class UpstreamAuthError(UpstreamError):
    """The upstream refused the gateway's credentials: a gateway misconfiguration."""

    code = "upstream_auth_failed"
    fallback_reason = "auth_failed"
    retry_same = False


class CircuitOpenError(UpstreamError):
    status = 503
    code = "circuit_open"
    fallback_reason = "circuit_open"
    retry_same = False


class UpstreamInvalidResponseError(UpstreamError):
    code = "upstream_invalid_response"
    fallback_reason = "invalid_response"


class UpstreamBadRequestError(UpstreamError):
    """The upstream says the client's request is wrong: returned as is, never retried."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    retryable = False
    retry_same = False


class OfflineError(Exception):
    """Base of the errors of offline tools; the message says which file and what to fix."""


class DatasetError(OfflineError):
    """A routing dataset, its model table or a feedback file cannot be read."""


class RouterFileError(OfflineError):
    """A learned-router file cannot be loaded (missing, corrupt, or another format version)."""
