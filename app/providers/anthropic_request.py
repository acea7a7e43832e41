"""OpenAI chat-completions body → Anthropic Messages API request. Pure: no I/O, no state.

What is translated (everything else an OpenAI client may send is dropped, because the
Messages API has no equivalent: ``seed``, ``logprobs``, ``logit_bias``, penalties, ``metadata``,
``reasoning_effort``, ``stream_options``):

- ``system``/``developer`` messages, wherever they appear → the top-level ``system`` blocks;
- turns: consecutive same-role turns are merged (the API wants alternating roles), ``tool``
  messages become ``tool_result`` blocks of a user turn (placed before that turn's text),
  assistant ``tool_calls`` become ``tool_use`` blocks;
- content parts: text, images (``data:`` URLs → base64 source, http(s) URLs → url source),
  PDF ``file`` parts with ``file_data`` → document blocks; a part's ``cache_control`` is kept;
- ``tools`` → ``name``/``description``/``input_schema`` (``strict`` kept); ``tool_choice``
  auto/none/required/named → auto/none/any/tool; ``parallel_tool_calls: false`` →
  ``disable_parallel_tool_use``;
- ``max_completion_tokens``/``max_tokens`` → ``max_tokens`` (required by the API), default
  :data:`DEFAULT_MAX_TOKENS`, both bounded by the model's ``max_output_tokens``;
- ``stop`` → ``stop_sequences``; ``temperature`` (clamped to Anthropic's 0..1); ``top_p`` only
  when no temperature is set (recent Claude models reject both); ``user`` →
  ``metadata.user_id``;
- ``response_format``: ``json_schema`` → ``output_config.format`` (structured outputs);
  ``json_object`` → an instruction appended to the system prompt (the documented way to get
  JSON without a schema).

:func:`add_cache_breakpoints` marks the prompt-cache breakpoints; the adapter applies it when
a deployment sets ``prompt_cache: true`` or the caller asks for it per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

ANTHROPIC_VERSION: Final = "2023-06-01"
# Used when the client sends no max_tokens; never above the model's max_output_tokens.
DEFAULT_MAX_TOKENS: Final = 4096
# The API accepts at most this many cache_control breakpoints per request.
MAX_CACHE_BREAKPOINTS: Final = 4
JSON_INSTRUCTION: Final = (
    "Respond with a single valid JSON object and nothing else: no prose, no Markdown fences."
)

_EPHEMERAL: Final[Mapping[str, str]] = {"type": "ephemeral"}
_DATA_URL = re.compile(
    r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?P<params>(;[^,;]*)*),(?P<data>.*)$", re.S
)
_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_CHOICES: Final[Mapping[str, dict[str, Any]]] = {
    "auto": {"type": "auto"},
    "none": {"type": "none"},
    "required": {"type": "any"},
}


class UntranslatableRequestError(ValueError):
    """The OpenAI body uses something the Messages API cannot express; ``param`` names it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# -- content ----------------------------------------------------------------------------------
def _text_block(text: str, part: Mapping[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _media_source(url: str, where: str, allowed: frozenset[str] | None) -> dict[str, Any]:
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match["params"]:
        raise UntranslatableRequestError(
            f"'{where}' must be an http(s) URL or a base64 data: URL (data:image/png;base64,...)",
            param=where,
        )
    media = match["media"].lower()
    if allowed is not None and media not in allowed:
        raise UntranslatableRequestError(
            f"'{where}' has media type {media}; Anthropic accepts {', '.join(sorted(allowed))}",
            param=where,
        )
    return {"type": "base64", "media_type": media, "data": match["data"]}


def _part_block(part: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(part, Mapping):
        raise UntranslatableRequestError(f"'{where}' must be an object with a 'type'", param=where)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise UntranslatableRequestError(f"'{where}.{kind}' must be a string", param=where)
        return _text_block(text, part) if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        if not isinstance(url, str):
            raise UntranslatableRequestError(f"'{where}.image_url.url' is required", param=where)
        block: dict[str, Any] = {
            "type": "image",
            "source": _media_source(url, f"{where}.image_url.url", _IMAGE_TYPES),
        }
    elif kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, Mapping) else None
        if not isinstance(data, str):
            raise UntranslatableRequestError(
                f"'{where}.file.file_data' must be a base64 data: URL (file ids are not "
                "portable to Anthropic deployments)",
                param=where,
            )
        block = {
            "type": "document",
            "source": _media_source(
                data, f"{where}.file.file_data", frozenset({"application/pdf"})
            ),
        }
    else:
        raise UntranslatableRequestError(
            f"'{where}' has type {kind!r}, which Anthropic deployments cannot take; send "
            "text, image_url or file parts",
            param=where,
        )
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    if isinstance(content, list):
        blocks = [_part_block(p, f"{where}[{i}]") for i, p in enumerate(content)]
        return [b for b in blocks if b is not None]
    raise UntranslatableRequestError(
        f"'{where}' must be a string or an array of content parts", param=where
    )


def _tool_use_blocks(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise UntranslatableRequestError(f"'{where}' must be an array", param=where)
    blocks = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise UntranslatableRequestError(
                f"'{where}[{i}]' must be a function call with a name", param=where
            )
        raw = fn.get("arguments") or "{}"
        try:
            arguments = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise UntranslatableRequestError(
                f"'{where}[{i}].function.arguments' must be a JSON object encoded as a string",
                param=where,
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"call_{i}"),
                "name": fn["name"],
                "input": arguments,
            }
        )
    return blocks


def _tool_result_block(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    tool_use_id = message.get("tool_call_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise UntranslatableRequestError(
            f"'{where}.tool_call_id' is required: the id of the assistant tool call it answers",
            param=f"{where}.tool_call_id",
        )
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if isinstance(content, str):
        block["content"] = content
    else:
        block["content"] = _content_blocks(content, f"{where}.content")
    return block


# -- turns ------------------------------------------------------------------------------------
def _system_and_turns(
    messages: list[Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise UntranslatableRequestError(f"'{where}' must be an object", param=where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_content_blocks(content, f"{where}.content"))
            continue
        if role == "user":
            blocks = _content_blocks(content, f"{where}.content")
        elif role == "assistant":
            blocks = _content_blocks(content, f"{where}.content")
            if message.get("tool_calls"):
                blocks += _tool_use_blocks(message["tool_calls"], f"{where}.tool_calls")
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message, where)]
        else:
            raise UntranslatableRequestError(
                f"'{where}.role' {role!r} has no Anthropic equivalent; use user, assistant, "
                "system or tool",
                param=f"{where}.role",
            )
        if not blocks:
            continue  # the API rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # tool_result blocks must open their user turn.
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    _trim_final_assistant(turns)
    return system, turns


def _trim_final_assistant(turns: list[dict[str, Any]]) -> None:
    """A final assistant turn (a prefill) must not end in whitespace."""
    if not turns or turns[-1]["role"] != "assistant":
        return
    blocks = turns[-1]["content"]
    last = blocks[-1]
    if last.get("type") == "text":
        text = last["text"].rstrip()
        if text:
            blocks[-1] = {**last, "text": text}
        else:
            blocks.pop()
    if not blocks:
        turns.pop()


# -- parameters -------------------------------------------------------------------------------
def max_tokens_for(body: Mapping[str, Any], model_max_output: int) -> int:
    """The client's limit (``max_completion_tokens`` first) or the default, within the model's."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, model_max_output)
    return min(DEFAULT_MAX_TOKENS, model_max_output)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise UntranslatableRequestError("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type", "function") != "function"
            or not isinstance(fn, Mapping)
            or not isinstance(fn.get("name"), str)
        ):
            raise UntranslatableRequestError(
                f'\'tools[{i}]\' must be {{"type": "function", "function": {{"name": ...}}}}',
                param="tools",
            )
        item: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            item["description"] = fn["description"]
        if fn.get("strict") is True:
            item["strict"] = True
        out.append(item)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        result: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        result = dict(_TOOL_CHOICES[choice])
    elif (
        isinstance(choice, Mapping)
        and isinstance(choice.get("function"), Mapping)
        and isinstance(choice["function"].get("name"), str)
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise UntranslatableRequestError(
            "'tool_choice' must be auto, none, required or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _stop_sequences(stop: Any) -> list[str]:
    values = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # The API rejects whitespace-only stop sequences.
    return [s for s in values if isinstance(s, str) and s.strip()]


def _response_format(fmt: Any, payload: dict[str, Any], system: list[dict[str, Any]]) -> None:
    if not isinstance(fmt, Mapping):
        return
    kind = fmt.get("type")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise UntranslatableRequestError(
                "'response_format.json_schema.schema' must be a JSON Schema object",
                param="response_format",
            )
        payload["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif kind == "json_object":
        system.append(_text_block(JSON_INSTRUCTION))


def to_messages_request(
    body: Mapping[str, Any],
    *,
    upstream_model: str,
    max_output_tokens: int,
    stream: bool,
    prompt_cache: bool = False,
) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat-completions body.

    Raises :class:`UntranslatableRequestError` naming the field that cannot be expressed.
    """
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise UntranslatableRequestError(
            "'n' > 1 is not supported by Anthropic deployments; send n=1", param="n"
        )
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise UntranslatableRequestError("'messages' must be an array", param="messages")
    system, turns = _system_and_turns(messages)
    if not turns:
        raise UntranslatableRequestError(
            "Anthropic deployments need at least one non-empty user or assistant message "
            "besides the system prompt",
            param="messages",
        )
    payload: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": max_tokens_for(body, max_output_tokens),
        "messages": turns,
    }
    _response_format(body.get("response_format"), payload, system)
    if system:
        payload["system"] = system
    tools = body.get("tools")
    if tools:
        payload["tools"] = _tools(tools)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            payload["tool_choice"] = choice
    stop = _stop_sequences(body.get("stop"))
    if stop:
        payload["stop_sequences"] = stop
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        payload["temperature"] = min(max(float(temperature), 0.0), 1.0)
    else:
        top_p = body.get("top_p")
        if isinstance(top_p, int | float) and not isinstance(top_p, bool):
            payload["top_p"] = float(top_p)
    user = body.get("user")
    if isinstance(user, str) and user:
        payload["metadata"] = {"user_id": user}
    if stream:
        payload["stream"] = True
    if prompt_cache:
        payload = add_cache_breakpoints(payload)
    return payload


# -- prompt cache -----------------------------------------------------------------------------
def _count_breakpoints(payload: Mapping[str, Any]) -> int:
    count = 0
    for key in ("tools", "system"):
        items = payload.get(key)
        if isinstance(items, list):
            count += sum(1 for b in items if isinstance(b, Mapping) and "cache_control" in b)
    for message in payload.get("messages") or ():
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for b in content if isinstance(b, Mapping) and "cache_control" in b)
    return count


def _mark_last(blocks: list[Any]) -> list[Any] | None:
    """A copy of ``blocks`` with ``cache_control`` on the last block (None if nothing to mark)."""
    if not blocks or not isinstance(blocks[-1], Mapping) or "cache_control" in blocks[-1]:
        return None
    if blocks[-1].get("type") in ("thinking", "redacted_thinking"):
        return None  # thinking blocks cannot carry a breakpoint
    return [*blocks[:-1], {**blocks[-1], "cache_control": dict(_EPHEMERAL)}]


def add_cache_breakpoints(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a Messages request with ephemeral prompt-cache breakpoints added.

    In priority order, within the API's limit of four (breakpoints the client already placed
    count): the end of the system prompt (or of the tool list when there is no system
    prompt), which caches tools + system; the last message, which writes the whole prompt to
    the cache for the next turn; and the previous turn's last user message, where the
    previous request wrote its cache entry, so it is read back even when this turn added
    more than the API's 20-block lookback. The input is not modified.
    """
    out = dict(payload)
    budget = MAX_CACHE_BREAKPOINTS - _count_breakpoints(payload)
    head_key = "system" if isinstance(payload.get("system"), list) else "tools"
    head = payload.get(head_key)
    if budget > 0 and isinstance(head, list):
        marked = _mark_last(head)
        if marked is not None:
            out[head_key] = marked
            budget -= 1
    messages = list(payload.get("messages") or ())
    out["messages"] = messages
    targets = []
    if messages:
        targets.append(len(messages) - 1)
        previous = next(
            (i for i in range(len(messages) - 2, -1, -1) if messages[i].get("role") == "user"),
            None,
        )
        if previous is not None:
            targets.append(previous)
    for index in targets:
        if budget <= 0:
            break
        content = messages[index].get("content")
        if isinstance(content, str):
            content = [_text_block(content)] if content else []
        marked = _mark_last(content) if isinstance(content, list) else None
        if marked is not None:
            messages[index] = {**messages[index], "content": marked}
            budget -= 1
    return out
