"""Request attribution: who a request was for and what it was about, from ``"pareto"``.

A client attributes a request with two keys of the body's ``"pareto"`` object (OpenAI SDKs:
``extra_body``)::

    "user_id": "end-user-42"                        a string, at most 256 characters
    "tags": {"team": "search", "env": "staging"}    at most 16 string -> string pairs
    "tags": ["batch", "nightly"]                    or at most 16 strings

Keys and values are at most 128 characters and not empty. They are copied as sent into the
request's record (its JSON log line) and into the feedback log, where spend and scores can be
grouped by them; they are never metric labels (unbounded values would make unbounded
series) and never sent upstream (the gateway strips ``"pareto"``). A value outside these
bounds is a 400 naming the field, so a typo is not silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from app.errors import InvalidRequestError

MAX_TAGS: Final = 16
MAX_TAG_CHARS: Final = 128
MAX_USER_ID_CHARS: Final = 256
_CODE: Final = "invalid_attribution"

Tags = dict[str, str] | list[str]


@dataclass(frozen=True, slots=True)
class Attribution:
    """A request's ``pareto.user_id`` and ``pareto.tags`` (None when not sent)."""

    user_id: str | None = None
    tags: Tags | None = None


NO_ATTRIBUTION: Final = Attribution()


def _bad(where: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{where} {message}", param=where, code=_CODE)


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        shown = repr(value) if not isinstance(value, str) else f"{len(value)} characters"
        raise _bad(where, f"must be a non-empty string of at most {limit} characters, got {shown}")
    return value


def _tags(value: Any) -> Tags:
    where = "pareto.tags"
    if not isinstance(value, dict | list):
        raise _bad(
            where,
            'must be an object of strings like {"team": "search"} or an array of strings, '
            f"got {type(value).__name__}",
        )
    if len(value) > MAX_TAGS:
        raise _bad(where, f"may hold at most {MAX_TAGS} tags, got {len(value)}")
    if isinstance(value, list):
        return [_text(tag, f"{where}.{i}", MAX_TAG_CHARS) for i, tag in enumerate(value)]
    pairs: dict[str, str] = {}
    for key, tag in value.items():
        _text(key, f"{where} key", MAX_TAG_CHARS)
        pairs[key] = _text(tag, f"{where}.{key}", MAX_TAG_CHARS)
    return pairs


def request_attribution(body: Mapping[str, Any]) -> Attribution:
    """``pareto.user_id`` and ``pareto.tags`` of a chat body, validated (400 otherwise)."""
    extra = body.get("pareto")
    if not isinstance(extra, dict) or ("user_id" not in extra and "tags" not in extra):
        return NO_ATTRIBUTION  # the common case; a non-object "pareto" is rejected elsewhere
    user_id = extra.get("user_id")
    tags = extra.get("tags")
    return Attribution(
        user_id=None if user_id is None else _text(user_id, "pareto.user_id", MAX_USER_ID_CHARS),
        tags=None if tags is None else _tags(tags),
    )
