"""Parse the chat-completions body once and check the fields the gateway itself reads.

No full-schema validation: unknown fields are forwarded untouched. Each problem raises an
:class:`InvalidRequestError` whose message names the field and says what to send instead.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import ContentSizeError, InvalidRequestError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode JSON; the top level must be an object."""
    if not raw.strip():
        raise InvalidRequestError(
            "the request body is empty; send a JSON object with 'model' and 'messages'"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON ({exc}); send a JSON object with 'model' "
            "and 'messages'"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, got {_type_name(body)}")
    return body


def _expect(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> None:
    value = body.get(key)
    if value is None:
        return
    ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
    if not ok:
        raise InvalidRequestError(f"'{key}' must be {what}, got {_type_name(value)}", param=key)


def validate_chat(body: dict[str, Any], *, max_messages: int, max_content_chars: int) -> None:
    """Check the fields the gateway reads; leave everything else to the upstream."""
    model = body.get("model")
    if model is None:
        raise InvalidRequestError(
            "'model' is required: a catalog model name or a routing policy such as 'auto' "
            "(GET /v1/models lists them)",
            param="model",
        )
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            f"'model' must be a non-empty string, got {_type_name(model)}", param="model"
        )
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequestError(
            "'messages' is required: a non-empty array of {role, content} objects",
            param="messages",
        )
    if not isinstance(messages, list):
        raise InvalidRequestError(
            f"'messages' must be an array of {{role, content}} objects, got {_type_name(messages)}",
            param="messages",
        )
    if not messages:
        raise InvalidRequestError(
            "'messages' must not be empty: send at least one {role, content} message",
            param="messages",
        )
    if len(messages) > max_messages:
        raise ContentSizeError(
            f"'messages' has {len(messages)} entries; this gateway accepts at most {max_messages}",
            param="messages",
        )
    chars = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(
                f"'{where}' must be an object with 'role' and 'content', got {_type_name(message)}",
                param=where,
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequestError(
                f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}, got {role!r}",
                param=f"{where}.role",
            )
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise InvalidRequestError(
                        f"'{where}.content[{j}]' must be an object with a 'type'",
                        param=f"{where}.content",
                    )
                text = part.get("text")
                if isinstance(text, str):
                    chars += len(text)
        elif content is not None:
            raise InvalidRequestError(
                f"'{where}.content' must be a string or an array of content parts, "
                f"got {_type_name(content)}",
                param=f"{where}.content",
            )
        elif role in ("user", "system", "developer"):
            raise InvalidRequestError(
                f"'{where}.content' is required for role {role!r}", param=f"{where}.content"
            )
    if chars > max_content_chars:
        raise ContentSizeError(
            f"the messages hold {chars} characters of text; this gateway accepts at most "
            f"{max_content_chars}",
            param="messages",
        )
    _expect(body, "stream", (bool,), "a boolean")
    _expect(body, "stream_options", (dict,), 'an object like {"include_usage": true}')
    for key in ("max_tokens", "max_completion_tokens", "n"):
        _expect(body, key, (int,), "a positive integer")
        value = body.get(key)
        if value is not None and value <= 0:
            raise InvalidRequestError(f"'{key}' must be a positive integer, got {value}", param=key)
    _expect(body, "tools", (list,), "an array of tool definitions")
    _expect(body, "response_format", (dict,), 'an object like {"type": "json_object"}')
    _expect(body, "user", (str,), "a string")
    _expect(body, "pareto", (dict,), "an object of routing overrides")
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _expect(body, key, (int, float), "a number")
