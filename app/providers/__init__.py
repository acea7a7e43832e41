"""Provider adapters behind one protocol, and the registry that picks one per deployment."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx

from app.catalog.model import Deployment
from app.providers.anthropic import AnthropicProvider
from app.providers.base import Completion, Provider, StreamChunk, UpstreamCall, Usage
from app.providers.http import HTTPBackend
from app.providers.openai_compat import OpenAICompatProvider
from app.providers.simulated import SimulatedProvider


class RemoteSimulatedProvider:
    """``kind: simulated`` deployments served by a ``pareto simulate`` server over HTTP.

    The deployment id is sent as the model name, so the simulator (started with the same
    config) answers with that deployment's speeds and faults.
    """

    def __init__(self, client: HTTPBackend | httpx.AsyncClient, base_url: str) -> None:
        self._http = OpenAICompatProvider(client)
        self._base_url = base_url.rstrip("/")
        # deployment id -> (catalog deployment, its remote twin); rebuilt after a reload.
        self._remote: dict[str, tuple[Deployment, Deployment]] = {}

    def _rewrite(self, call: UpstreamCall) -> UpstreamCall:
        dep = call.deployment
        cached = self._remote.get(dep.id)
        if cached is None or cached[0] is not dep:
            remote = dataclasses.replace(dep, base_url=self._base_url, upstream_model=dep.id)
            cached = (dep, remote)
            self._remote[dep.id] = cached
        return dataclasses.replace(call, deployment=cached[1])

    async def complete(self, call: UpstreamCall) -> Completion:
        return await self._http.complete(self._rewrite(call))

    def stream(self, call: UpstreamCall) -> AsyncIterator[StreamChunk]:
        return self._http.stream(self._rewrite(call))

    async def aclose(self) -> None:
        self._remote.clear()


class ProviderRegistry:
    """One adapter instance per provider kind, sharing the process's pooled HTTP client."""

    def __init__(
        self, client: HTTPBackend | httpx.AsyncClient, simulated_base_url: str | None = None
    ) -> None:
        simulated: Provider = (
            RemoteSimulatedProvider(client, simulated_base_url)
            if simulated_base_url
            else SimulatedProvider()
        )
        self._by_kind: dict[str, Provider] = {
            "openai_compat": OpenAICompatProvider(client),
            "anthropic": AnthropicProvider(client),
            "simulated": simulated,
        }

    def for_deployment(self, deployment: Deployment) -> Provider:
        return self._by_kind[deployment.kind]

    async def aclose(self) -> None:
        for provider in self._by_kind.values():
            await provider.aclose()


__all__ = [
    "Completion",
    "Provider",
    "ProviderRegistry",
    "StreamChunk",
    "UpstreamCall",
    "Usage",
]
