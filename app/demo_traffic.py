"""``pareto demo-traffic``: bounded, varied demo traffic so dashboards show live panels.

Meant for a gateway on simulated deployments (``config/demo.yaml``): it mixes routing
policies and catalog models, streams and whole answers, session conversations (sticky routing
and prompt-cache hits), scripted upstream failures (``[sim:error=503@<deployment>]`` on the
deployment that served the model last, so the gateway fails over), cascade answers that get
escalated (``[sim:invalid_json]`` in JSON mode), a few requests no deployment can serve, and
an unknown model now and then (404). Bounded: at most ``rps`` requests per second (capped at
50), and ``requests`` in total (0 = until stopped).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_RPS = 50.0
SYSTEM = (
    "You are the support assistant of a small online shop. Answer briefly and politely; "
    "quote order numbers exactly; never invent prices. " * 6
)
QUESTIONS = (
    "Where is my order 1042?",
    "Write a Python function that merges two sorted lists.",
    "Summarise our return policy in two sentences.",
    "Translate 'thank you for your patience' into French.",
    "What is 17 * 23? Show the steps.",
    "Give me a short product description for a steel water bottle.",
)


@dataclass(slots=True)
class TrafficStats:
    """What was sent and how it ended (for the command's summary and for tests)."""

    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0

    def add(self, status: int) -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


class DemoTraffic:
    """Builds the i-th demo request (deterministic for a seed) and sends it."""

    def __init__(self, models: list[str], policies: list[str], seed: int = 7) -> None:
        self.models = models or ["auto"]
        self.policies = [p for p in policies if not p.startswith("cascade")] or ["auto"]
        self.cascades = [p for p in policies if p.startswith("cascade")]
        self._rng = random.Random(seed)
        self._last_served: dict[str, str] = {}
        self._conversations: dict[str, list[dict[str, Any]]] = {}

    def request(self, i: int) -> tuple[dict[str, Any], dict[str, str]]:
        """The body and headers of request number ``i``."""
        rng = self._rng
        headers: dict[str, str] = {}
        question = QUESTIONS[i % len(QUESTIONS)]
        model = self.models[i % len(self.models)] if i % 3 == 0 else rng.choice(self.policies)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ]
        body: dict[str, Any] = {"model": model, "max_tokens": 48}
        if i % 4 == 1:  # a session: the same conversation grows, sticky to one deployment
            session = f"demo-session-{i % 3}"
            headers["x-pareto-session-id"] = session
            history = self._conversations.setdefault(session, [messages[0]])
            history.append({"role": "user", "content": question})
            messages = list(history)
            history.append({"role": "assistant", "content": "Noted."})
            del history[1:-8]  # keep it short
        if i % 7 == 3 and model in self._last_served:  # fail the usual deployment over
            messages[-1] = {
                "role": "user",
                "content": f"{question} [sim:error=503@{self._last_served[model]}]",
            }
        if self.cascades and i % 5 == 2:
            body["model"] = model = self.cascades[i % len(self.cascades)]
            if i % 10 == 2:
                body["response_format"] = {"type": "json_object"}
                messages[-1] = {"role": "user", "content": f"{question} as JSON [sim:invalid_json]"}
        if i % 31 == 5:  # a client mistake (404 model_not_found)
            body["model"] = "no-such-model"
        if i % 29 == 11:  # nothing can serve this one: an error on the dashboards
            messages[-1] = {"role": "user", "content": f"{question} [sim:error=500]"}
        body["messages"] = messages
        if i % 2 == 0:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body, headers

    def served(self, model: str, deployment: str | None) -> None:
        if deployment:
            self._last_served[model] = deployment


async def discover(client: httpx.AsyncClient) -> tuple[list[str], list[str]]:
    """Catalog models and routing policies, from ``GET /v1/models``."""
    r = await client.get("/v1/models")
    r.raise_for_status()
    models: list[str] = []
    policies: list[str] = []
    for item in r.json()["data"]:
        kind = (item.get("pareto") or {}).get("kind")
        (policies if kind == "policy" else models).append(item["id"])
    return models[:4], policies


async def run(
    base_url: str,
    *,
    rps: float = 2.0,
    requests: int = 0,
    concurrency: int = 8,
    api_key: str | None = None,
    seed: int = 7,
    on_response: Callable[[int], None] | None = None,
) -> TrafficStats:
    """Send demo traffic to ``base_url`` (the gateway's root) and return what happened."""
    rps = min(max(rps, 0.1), MAX_RPS)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    stats = TrafficStats()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        models, policies = await discover(client)
        traffic = DemoTraffic(models, policies, seed)

        async def one(i: int) -> None:
            body, extra = traffic.request(i)
            try:
                async with gate:
                    r = await client.post("/v1/chat/completions", json=body, headers=extra)
                    await r.aread()
            except httpx.HTTPError:
                stats.transport_errors += 1
                return
            stats.add(r.status_code)
            traffic.served(str(body["model"]), r.headers.get("x-pareto-deployment"))
            if on_response is not None:
                on_response(r.status_code)

        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in itertools.count() if requests <= 0 else range(requests):
            await asyncio.sleep(max(0.0, start + i / rps - loop.time()))
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return stats
