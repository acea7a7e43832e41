"""A deterministic fake LLM for the zero-setup demo, tests and benchmarks.

The same :class:`SimulatedLLM` serves in-process (``kind: simulated`` deployments) and behind
the standalone OpenAI-compatible server (``pareto simulate``). It produces OpenAI-shaped
answers whose text depends only on the prompt, with per-deployment TTFT and decode speed,
counted prompt tokens, an emulated prefix cache, tool calls, JSON mode, and injected faults.

Prompt directives (in the last user message) script one request, for tests and demos:
``[sim:tokens=N]`` answer length, ``[sim:error=503]`` fail with that status, ``[sim:hang]``
never answer, ``[sim:cut=N]`` cut a stream after N chunks, ``[sim:refuse]`` a refusal,
``[sim:invalid_json]`` malformed JSON in JSON mode (and in tool-call arguments),
``[sim:schema_mismatch]`` JSON (or tool arguments) that parses but breaks the schema,
``[sim:low_confidence]`` low logprobs, ``[sim:empty]`` an empty answer, ``[sim:grade=N]`` the
answer is just ``N`` (a judge's score), ``[sim:context_window]`` a context-length error,
``[sim:retry_after=N]`` a ``Retry-After`` on an injected 429, ``[sim:invalid_response]`` a 200
whose body is not JSON. A directive may name deployments it applies to:
``[sim:error=500@gpt-oss-120b@groq]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.catalog.model import Deployment
from app.catalog.spec import FaultSpec, SimulationSpec
from app.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamInvalidResponseError,
    UpstreamTimeoutError,
)
from app.providers.base import Completion, StreamChunk, UpstreamCall, Usage, error_from_status
from app.tokens import content_text, estimate_messages_tokens

_WORDS = (
    "the",
    "gateway",
    "routes",
    "each",
    "request",
    "to",
    "the",
    "cheapest",
    "model",
    "that",
    "clears",
    "its",
    "quality",
    "bar",
    "while",
    "latency",
    "and",
    "cost",
    "stay",
    "inside",
    "their",
    "limits",
    "so",
    "teams",
    "pay",
    "for",
    "strength",
    "only",
    "where",
    "it",
    "matters",
    "and",
    "every",
    "answer",
    "arrives",
    "with",
    "its",
    "price",
    "attached",
)
_DIRECTIVE = re.compile(r"\[sim:([a-z_]+)(?:=([^\]@]+))?(?:@([^\]]+))?\]")
_HANG_S = 300.0
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


@dataclass(slots=True)
class Profile:
    """How one simulated deployment behaves."""

    name: str
    ttft_s: float = 0.0
    decode_tps: float = 1000.0
    output_tokens: int = 64
    realtime: bool = True
    faults: FaultSpec = field(default_factory=FaultSpec)
    prefix_cache: bool = True
    cache_min_tokens: int = 0
    cache_ttl_s: float | None = 600.0
    seed: int = 0

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> Profile:
        sim = deployment.simulation or SimulationSpec()
        return cls(
            name=deployment.id,
            ttft_s=sim.ttft_s if sim.ttft_s is not None else deployment.ttft_s,
            decode_tps=sim.decode_tps if sim.decode_tps is not None else deployment.decode_tps,
            output_tokens=sim.output_tokens,
            realtime=sim.realtime,
            faults=sim.faults,
            prefix_cache=sim.prefix_cache,
            cache_min_tokens=sim.cache_min_tokens,
            cache_ttl_s=sim.cache_ttl_s,
            seed=sim.seed,
        )


@dataclass(slots=True)
class Plan:
    """What the simulator decided to do for one request."""

    fail_status: int | None = None
    hang: bool = False
    cut_after: int | None = None
    extra_ttft_s: float = 0.0
    refuse: bool = False
    invalid_json: bool = False
    low_confidence: bool = False
    schema_mismatch: bool = False
    empty: bool = False
    grade: str | None = None
    tokens: int | None = None
    retry_after: str | None = None
    invalid_response: bool = False


class PrefixCache:
    """Emulates a provider prompt cache, per deployment, at message granularity.

    Like OpenAI's and Anthropic's caches it holds prompt prefixes: after a request, every
    message prefix of its prompt is cached, and the next request is billed ``cached_tokens``
    for the longest prefix seen before. In a chat that resends its history, turn *n* finds
    turn *n-1*'s whole prompt, so the hit ratio climbs towards 90 % by turn ten — and drops to
    zero on a deployment that has not seen the conversation. Prefixes shorter than
    ``min_tokens`` are not cached (OpenAI: 1024); entries unused for ``ttl_s`` expire (providers
    keep prefixes 5–10 minutes); at most ``capacity`` entries, least recently used evicted.
    """

    def __init__(
        self,
        capacity: int = 10_000,
        min_tokens: int = 0,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[int, float]] = OrderedDict()
        self._capacity = capacity
        self._min_tokens = min_tokens
        self._ttl_s = ttl_s
        self._clock = clock

    def lookup_and_store(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of the longest cached message prefix; stores every prefix of this prompt."""
        digest = hashlib.blake2b(digest_size=16)
        tokens = 0
        prefixes: list[tuple[bytes, int]] = []
        for message in messages:
            digest.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
            tokens += estimate_messages_tokens([message])
            if tokens >= self._min_tokens:
                prefixes.append((digest.copy().digest(), tokens))
        now = self._clock()
        cached = 0
        for key, count in prefixes:
            hit = self._entries.get(key)
            if hit is not None and (self._ttl_s is None or now - hit[1] < self._ttl_s):
                cached = count
        for key, count in prefixes:
            self._entries[key] = (count, now)
            self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return cached


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _sample_for_schema(schema: Any, words: Iterator[str], depth: int = 0) -> Any:
    """A value that matches a (simple) JSON schema: enough for tool calls and JSON mode."""
    if not isinstance(schema, dict) or depth > 6:
        return next(words)
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _sample_for_schema(sub, words, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_sample_for_schema(schema.get("items") or {}, words, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return next(words)


def _mismatch_for_schema(schema: Any) -> Any:
    """JSON that parses but breaks a schema: every property of the wrong type."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if not props:
            return ["not", "an", "object"]
        wrong: dict[str, Any] = {}
        for name, sub in props.items():
            sub_kind = sub.get("type") if isinstance(sub, dict) else None
            wrong[name] = "wrong type" if sub_kind in ("integer", "number", "boolean") else 42
        return wrong
    return {"unexpected": True} if kind != "string" else 42


class SimulatedLLM:
    """Deterministic answers with timing and faults for one deployment profile."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._rng = random.Random(profile.seed)
        self._cache = PrefixCache(min_tokens=profile.cache_min_tokens, ttl_s=profile.cache_ttl_s)
        self._created = int(time.time())
        self.requests = 0  # requests this deployment received (tests and demos read it)

    # -- deciding -------------------------------------------------------------------------
    def plan(self, messages: list[dict[str, Any]]) -> Plan:
        self.requests += 1
        plan = Plan()
        faults = self.profile.faults
        roll = self._rng.random()
        if roll < faults.error_rate:
            plan.fail_status = self._rng.choice(faults.error_status or [500])
        elif roll < faults.error_rate + faults.hang_rate:
            plan.hang = True
        elif roll < faults.error_rate + faults.hang_rate + faults.cut_rate:
            plan.cut_after = 3
        if self._rng.random() < faults.slow_first_token_rate:
            plan.extra_ttft_s = faults.slow_first_token_s
        for name, value, target in _DIRECTIVE.findall(_last_user_text(messages)):
            if target and target != self.profile.name:
                continue
            if name == "error":
                plan.fail_status = int(value or 500)
            elif name == "hang":
                plan.hang = True
            elif name == "cut":
                plan.cut_after = int(value or 3)
            elif name == "refuse":
                plan.refuse = True
            elif name == "invalid_json":
                plan.invalid_json = True
            elif name == "low_confidence":
                plan.low_confidence = True
            elif name == "schema_mismatch":
                plan.schema_mismatch = True
            elif name == "empty":
                plan.empty = True
            elif name == "grade":
                plan.grade = value or "5"
            elif name == "tokens":
                plan.tokens = max(1, int(value or 1))
            elif name == "context_window":
                plan.fail_status = -400
            elif name == "slow":
                plan.extra_ttft_s = float(value or 5)
            elif name == "retry_after":
                plan.retry_after = value or "1"
            elif name == "invalid_response":
                plan.invalid_response = True
        return plan

    def failure(self, plan: Plan) -> tuple[int, bytes] | None:
        """The HTTP status and OpenAI error body this attempt fails with, if any."""
        if plan.fail_status is None:
            return None
        if plan.fail_status == -400:
            return 400, orjson.dumps(
                {
                    "error": {
                        "message": "This model's maximum context length was exceeded",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                }
            )
        status = plan.fail_status
        return status, orjson.dumps(
            {
                "error": {
                    "message": f"simulated failure with status {status}",
                    "type": "server_error" if status >= 500 else "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        )

    # -- answering ------------------------------------------------------------------------
    def answer(self, body: dict[str, Any], plan: Plan) -> tuple[dict[str, Any], Usage, list[str]]:
        """The assistant message, usage and the token pieces to stream."""
        messages: list[dict[str, Any]] = body.get("messages") or []
        prompt_tokens = estimate_messages_tokens(messages)
        cached = self._cache.lookup_and_store(messages) if self.profile.prefix_cache else 0
        seed_text = _last_user_text(messages) + self.profile.name
        seed = int.from_bytes(hashlib.blake2b(seed_text.encode(), digest_size=8).digest(), "big")
        words = (_WORDS[(seed + i * 7) % len(_WORDS)] for i in range(1 << 30))
        natural = plan.tokens or self.profile.output_tokens
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        n_tokens = natural if not isinstance(limit, int) or limit <= 0 else min(natural, limit)
        finish = "length" if isinstance(limit, int) and 0 < limit < natural else "stop"

        message: dict[str, Any] = {"role": "assistant", "content": None}
        pieces: list[str]
        tools = body.get("tools")
        tool_choice = body.get("tool_choice", "auto")
        last_role = messages[-1].get("role") if messages else "user"
        wants_tool = (
            isinstance(tools, list)
            and tools
            and tool_choice != "none"
            and last_role != "tool"
            and not plan.refuse
        )
        response_format = body.get("response_format") or {}
        rf_type = response_format.get("type") if isinstance(response_format, dict) else None
        if wants_tool:
            assert isinstance(tools, list)
            chosen = tools[0]
            if isinstance(tool_choice, dict):
                name = (tool_choice.get("function") or {}).get("name")
                chosen = next(
                    (t for t in tools if (t.get("function") or {}).get("name") == name), chosen
                )
            fn = chosen.get("function") or {}
            params = fn.get("parameters") or {"type": "object"}
            if plan.schema_mismatch:
                args = _mismatch_for_schema(params)
            else:
                args = _sample_for_schema(params, words)
            arguments = orjson.dumps(args).decode()
            if plan.invalid_json:
                arguments = arguments[: max(1, len(arguments) // 2)]
            call_id = f"call_{seed % 10**12:012d}"
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": fn.get("name", "tool"), "arguments": arguments},
                }
            ]
            finish = "tool_calls"
            pieces = [arguments]
            n_tokens = max(1, len(arguments) // 4)
        elif plan.refuse:
            message["content"] = REFUSAL_TEXT
            pieces = [w + " " for w in REFUSAL_TEXT.split(" ")]
            pieces[-1] = pieces[-1].rstrip()
            n_tokens = len(pieces)
            finish = "stop"
        elif plan.empty or plan.grade is not None:
            text = "" if plan.empty else plan.grade or ""
            message["content"] = text
            pieces = [text] if text else []
            n_tokens = max(1, len(text) // 4)
            finish = "stop"
        elif rf_type in ("json_object", "json_schema"):
            if plan.invalid_json:
                text = '{"answer": "' + " ".join(next(words) for _ in range(3))
            elif rf_type == "json_schema":
                schema = (response_format.get("json_schema") or {}).get("schema") or {}
                value = (
                    _mismatch_for_schema(schema)
                    if plan.schema_mismatch
                    else _sample_for_schema(schema, words)
                )
                text = orjson.dumps(value).decode()
            else:
                text = orjson.dumps({"answer": " ".join(next(words) for _ in range(8))}).decode()
            message["content"] = text
            pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
            n_tokens = max(1, len(text) // 4)
            finish = "stop"
        else:
            pieces = [next(words) + " " for _ in range(n_tokens)]
            if pieces:
                pieces[-1] = pieces[-1].rstrip()
            message["content"] = "".join(pieces)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=n_tokens, cached_tokens=cached)
        message["_finish"] = finish
        return message, usage, pieces

    def _logprobs(self, pieces: list[str], plan: Plan) -> dict[str, Any]:
        value = -2.3 if plan.low_confidence else -0.02
        return {
            "content": [
                {"token": p, "logprob": value, "bytes": list(p.encode()), "top_logprobs": []}
                for p in pieces
            ],
            "refusal": None,
        }

    def completion_body(
        self, body: dict[str, Any], model: str, plan: Plan
    ) -> tuple[dict[str, Any], Usage]:
        message, usage, pieces = self.answer(body, plan)
        finish = message.pop("_finish")
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": self._logprobs(pieces, plan) if body.get("logprobs") else None,
            "finish_reason": finish,
        }
        rid = hashlib.blake2b(orjson.dumps(body.get("messages")), digest_size=8).hexdigest()
        out = {
            "id": f"chatcmpl-sim{rid}",
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "choices": [choice],
            "usage": usage.to_openai(),
            "system_fingerprint": None,
        }
        return out, usage

    def decode_delay(self, n_tokens: int, plan: Plan) -> float:
        if not self.profile.realtime:
            return 0.0
        return self.profile.ttft_s + plan.extra_ttft_s + n_tokens / self.profile.decode_tps

    def chunks(
        self, body: dict[str, Any], model: str, plan: Plan
    ) -> tuple[list[tuple[bytes, bool, str | None]], Usage, bytes]:
        """Serialised stream chunks ``(data, is_content, finish)`` and the usage chunk."""
        message, usage, pieces = self.answer(body, plan)
        finish = message.pop("_finish")
        rid = hashlib.blake2b(orjson.dumps(body.get("messages")), digest_size=8).hexdigest()
        head = (
            b'{"id":"chatcmpl-sim'
            + rid.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"system_fingerprint":null,"choices":'
        )
        out: list[tuple[bytes, bool, str | None]] = []
        role_delta: dict[str, Any] = {"role": "assistant", "content": ""}
        out.append((head + orjson.dumps([_choice(role_delta)]) + b"}", False, None))
        want_logprobs = bool(body.get("logprobs"))
        lp_value = -2.3 if plan.low_confidence else -0.02
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            first = {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            }
            out.append((head + orjson.dumps([_choice(first)]) + b"}", True, None))
            args = call["function"]["arguments"]
            for i in range(0, len(args), 16):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 16]}}]}
                out.append((head + orjson.dumps([_choice(delta)]) + b"}", True, None))
        else:
            for piece in pieces:
                lp: dict[str, Any] | None = (
                    {
                        "content": [
                            {"token": piece, "logprob": lp_value, "bytes": None, "top_logprobs": []}
                        ],
                        "refusal": None,
                    }
                    if want_logprobs
                    else None
                )
                out.append(
                    (
                        head + orjson.dumps([_choice({"content": piece}, logprobs=lp)]) + b"}",
                        True,
                        None,
                    )
                )
        out.append((head + orjson.dumps([_choice({}, finish=finish)]) + b"}", False, finish))
        usage_chunk = head + b"[]" + b',"usage":' + orjson.dumps(usage.to_openai()) + b"}"
        return out, usage, usage_chunk


def _choice(
    delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0.0005:
        await asyncio.sleep(delay)


class SimulatedProvider:
    """In-process provider for ``kind: simulated`` deployments (one LLM per deployment)."""

    def __init__(self) -> None:
        self._llms: dict[str, SimulatedLLM] = {}

    def llm_for(self, deployment: Deployment) -> SimulatedLLM:
        llm = self._llms.get(deployment.id)
        profile = Profile.from_deployment(deployment)
        if llm is None or llm.profile != profile:
            llm = SimulatedLLM(profile)
            self._llms[deployment.id] = llm
        return llm

    def requests_to(self, deployment_id: str) -> int:
        """How many requests the named deployment has received from this process."""
        llm = self._llms.get(deployment_id)
        return llm.requests if llm is not None else 0

    def _raise_failure(self, llm: SimulatedLLM, plan: Plan, deployment: str) -> None:
        failure = llm.failure(plan)
        if failure is not None:
            status, payload = failure
            raise error_from_status(deployment, status, payload, plan.retry_after)
        if plan.invalid_response:
            raise UpstreamInvalidResponseError(
                f"deployment {deployment} returned a body that is not JSON", deployment=deployment
            )

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment
        llm = self.llm_for(dep)
        plan = llm.plan(call.body.get("messages") or [])
        start = time.perf_counter()
        body, usage = llm.completion_body(call.body, dep.upstream_model, plan)
        # Like an HTTP upstream, a non-stream answers when it is done: past the caller's
        # first-byte budget the attempt times out there (``timeout_first_token``).
        done_in = _HANG_S if plan.hang else llm.decode_delay(usage.completion_tokens, plan)
        if done_in > call.first_token_timeout_s:
            await asyncio.sleep(call.first_token_timeout_s)
            raise UpstreamTimeoutError(
                f"deployment {dep.id} did not answer within {call.first_token_timeout_s:.3g}s",
                reason="timeout_first_token",
                deployment=dep.id,
            )
        self._raise_failure(llm, plan, dep.id)
        await _sleep_until(start + llm.decode_delay(usage.completion_tokens, plan))
        return Completion(body=body, usage=usage, ttft_s=time.perf_counter() - start)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[StreamChunk]:
        dep = call.deployment
        llm = self.llm_for(dep)
        plan = llm.plan(call.body.get("messages") or [])
        if plan.hang:
            await asyncio.sleep(_HANG_S)
        self._raise_failure(llm, plan, dep.id)
        chunks, usage, usage_chunk = llm.chunks(call.body, dep.upstream_model, plan)
        profile = llm.profile
        start = time.perf_counter()
        ttft = profile.ttft_s + plan.extra_ttft_s if profile.realtime else 0.0
        emitted = 0
        for data, is_content, finish in chunks:
            if plan.cut_after is not None and emitted >= plan.cut_after:
                raise UpstreamConnectionError(
                    f"deployment {dep.id} closed the stream mid-answer",
                    deployment=dep.id,
                    request_sent=True,
                )
            if profile.realtime and is_content:
                await _sleep_until(start + ttft + emitted / profile.decode_tps)
            if is_content:
                emitted += 1
            yield StreamChunk.event(data, content=is_content, finish_reason=finish)
        yield StreamChunk.event(usage_chunk, usage=usage, usage_only=True)

    async def aclose(self) -> None:
        self._llms.clear()


__all__ = ["Profile", "SimulatedLLM", "SimulatedProvider", "UpstreamError"]
