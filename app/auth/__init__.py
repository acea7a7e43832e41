"""Gateway keys, budgets and rate limits.

``config`` (the ``auth:`` section and the frozen :class:`ApiKey`), ``authenticate`` (header →
key), ``middleware`` (every ``/v1/`` request), ``admin`` (the admin-key guard).
"""

from app.auth.authenticate import Authenticator, log_auth_state
from app.auth.config import ApiKey, AuthConfig, generate_key, hash_key
from app.auth.middleware import AuthMiddleware, api_key_of

__all__ = [
    "ApiKey",
    "AuthConfig",
    "AuthMiddleware",
    "Authenticator",
    "api_key_of",
    "generate_key",
    "hash_key",
    "log_auth_state",
]
