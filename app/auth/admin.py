"""The admin guard: ``/admin/*`` needs ``Authorization: Bearer $PARETO_ADMIN_KEY``.

A separate key from the gateway keys: a leaked client key cannot mint more keys. The
comparison is constant-time.
"""

from __future__ import annotations

import hmac

from app.errors import GatewayError


def require_admin(authorization: str | None, admin_key: str | None) -> None:
    """Raise 403 when admin endpoints are off, 401 when the admin key is wrong or missing."""
    if not admin_key:
        raise GatewayError(
            "admin endpoints are disabled: set PARETO_ADMIN_KEY to enable them",
            status=403,
            code="admin_disabled",
        )
    expected = f"Bearer {admin_key}".encode()
    presented = (authorization or "").strip().encode("utf-8", "replace")
    if not hmac.compare_digest(presented, expected):
        raise GatewayError(
            "admin endpoints need 'Authorization: Bearer <PARETO_ADMIN_KEY>'",
            status=401,
            code="invalid_admin_key",
        )
