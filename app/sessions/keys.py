"""Session keys: which conversation a request belongs to, as an opaque hash.

In order of precedence the key comes from the ``x-pareto-session-id`` header, the body's
``"pareto": {"session_id": ...}`` extension, the OpenAI ``user`` field (when enabled), or it is
derived from the caller's credential, the system prompt and the first user message, so a plain
chat client that resends its history every turn gets stickiness too. Every key is hashed here,
before it reaches a store: no prompt text, session id or credential is ever stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InvalidRequestError
from app.tokens import content_text

SESSION_HEADER = "x-pareto-session-id"
MAX_SESSION_ID_CHARS = 256

KeySource = Literal["header", "body", "user", "derived"]


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The hashed key of one conversation and where it came from."""

    digest: str
    source: KeySource


def _hash(source: str, *parts: str) -> str:
    digest = hashlib.blake2b(digest_size=16, person=b"pareto-session")
    digest.update(source.encode())
    for part in parts:
        # Length-prefixed so ("ab", "c") and ("a", "bc") never collide.
        raw = part.encode("utf-8", "surrogatepass")
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()


def _explicit_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(
            f"{where} must be a non-empty string naming the conversation", param=where
        )
    if len(value) > MAX_SESSION_ID_CHARS:
        raise InvalidRequestError(
            f"{where} is {len(value)} characters; use at most {MAX_SESSION_ID_CHARS}",
            param=where,
        )
    return value


def _derived_parts(messages: list[Any]) -> tuple[str, str] | None:
    """The system prompt(s) and the first user message, or None when there is no user turn."""
    system: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(content_text(message.get("content")))
        elif role == "user":
            return "\n".join(system), content_text(message.get("content"))
    return None


def session_key(
    headers: Mapping[str, str], body: Mapping[str, Any], *, use_user_field: bool = True
) -> SessionKey | None:
    """The request's session key, or None when it has none (no user message to derive from)."""
    explicit = _explicit_id(headers.get(SESSION_HEADER), SESSION_HEADER)
    if explicit is not None:
        return SessionKey(_hash("id", explicit), "header")
    extension = body.get("pareto")
    if isinstance(extension, Mapping):
        explicit = _explicit_id(extension.get("session_id"), "pareto.session_id")
        if explicit is not None:
            return SessionKey(_hash("id", explicit), "body")
    if use_user_field:
        user = body.get("user")
        if isinstance(user, str) and user:
            return SessionKey(_hash("user", user), "user")
    messages = body.get("messages")
    parts = _derived_parts(messages) if isinstance(messages, list) else None
    if parts is None:
        return None
    caller = headers.get("authorization") or headers.get("x-api-key") or ""
    return SessionKey(_hash("derived", caller, *parts), "derived")
