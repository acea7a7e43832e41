"""The attempt walk with a scripted provider, a manual clock and a recorded fake sleep."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.model import Deployment, Model
from app.errors import (
    AllDeploymentsFailedError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamServerError,
)
from app.providers.base import Completion, UpstreamCall, Usage
from app.reliability import BreakerConfig, Breakers, Defaults, Failover, ManualClock
from app.reliability.limits import RequestLimits
from app.routing.plan import PlanEntry
from app.telemetry.record import Record

MODEL = Model("m", 50, {}, 32000, 4096, frozenset())


def entry(dep_id: str) -> PlanEntry:
    dep = Deployment(
        id=dep_id,
        model=MODEL,
        provider=dep_id.split("@")[1],
        kind="scripted",
        base_url=None,
        upstream_model="m",
        headers={},
        price_input=0,
        price_cached_input=0,
        price_output=0,
        batch_discount=0,
        ttft_s=0.1,
        decode_tps=100,
        context_window=32000,
        capabilities=frozenset(),
        connect_timeout_s=None,
        first_token_timeout_s=None,
        total_timeout_s=None,
        simulation=None,
    )
    return PlanEntry(dep, "test", 0.0, 0.1)


class Scripted:
    """Each deployment answers with the next item of its script (an error or ``None`` = ok)."""

    def __init__(self, script: dict[str, list[UpstreamError | None]]) -> None:
        self.script = script
        self.calls: list[str] = []

    def for_deployment(self, deployment: Deployment) -> Scripted:
        return self

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment.id
        self.calls.append(dep)
        outcome = self.script[dep].pop(0)
        if outcome is not None:
            raise outcome
        return Completion(body={"choices": []}, usage=Usage())


def setup(
    script: dict[str, list[UpstreamError | None]], *, deadline_s: float = 10, retries: int = 2
) -> tuple[Failover, Scripted, list[float], Any]:
    clock = ManualClock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        clock.advance(seconds)

    provider = Scripted(script)
    failover = Failover(
        provider,  # type: ignore[arg-type]
        Breakers(BreakerConfig(), clock=clock),
        Defaults(),
        clock=clock,
        sleep=sleep,
        jitter=lambda: 1.0,
    )
    walk = failover.begin(
        "req", Record(request_id="req"), RequestLimits(deadline_s, retries, 0.1, 2.0, None)
    )
    return failover, provider, sleeps, walk


def e500(dep: str) -> UpstreamServerError:
    return UpstreamServerError("boom", deployment=dep, upstream_status=500)


def e429(dep: str, retry_after: float | None) -> UpstreamRateLimitedError:
    return UpstreamRateLimitedError("slow down", deployment=dep, retry_after=retry_after)


async def test_exponential_backoff_between_retries_of_one_deployment() -> None:
    failover, provider, sleeps, walk = setup({"m@a": [e500("m@a"), e500("m@a"), None]})
    served, _ = await failover.complete([entry("m@a")], {}, walk)
    assert served.deployment.id == "m@a"
    assert sleeps == [0.1, 0.2]  # base 0.1s, doubled; jitter pinned to its maximum
    assert walk.record.attempts == 3 and walk.record.fallback_reason == "upstream_5xx"


async def test_a_fresh_fallback_is_tried_before_retrying_the_failed_one() -> None:
    failover, provider, sleeps, walk = setup({"m@a": [e500("m@a")], "m@b": [None]})
    served, _ = await failover.complete([entry("m@a"), entry("m@b")], {}, walk)
    assert provider.calls == ["m@a", "m@b"] and sleeps == []
    assert served.deployment.id == "m@b"


async def test_retry_after_is_honoured_when_it_fits_the_deadline() -> None:
    failover, provider, sleeps, walk = setup({"m@a": [e429("m@a", 1.5), None]})
    await failover.complete([entry("m@a")], {}, walk)
    assert sleeps == [1.5] and provider.calls == ["m@a", "m@a"]


async def test_retry_after_beyond_the_deadline_moves_on() -> None:
    failover, provider, sleeps, walk = setup(
        {"m@a": [e429("m@a", 30), None], "m@b": [e429("m@b", 40)]}, deadline_s=5
    )
    with pytest.raises(AllDeploymentsFailedError) as info:
        await failover.complete([entry("m@a"), entry("m@b")], {}, walk)
    assert sleeps == [] and provider.calls == ["m@a", "m@b"]
    assert info.value.status == 429 and info.value.headers["retry-after"] == "30"


async def test_retries_are_bounded_per_deployment() -> None:
    failover, provider, sleeps, walk = setup({"m@a": [e500("m@a")] * 5}, retries=1)
    with pytest.raises(AllDeploymentsFailedError) as info:
        await failover.complete([entry("m@a")], {}, walk)
    assert provider.calls == ["m@a", "m@a"]
    assert "m@a: upstream_5xx x2" in info.value.message


@pytest.mark.parametrize("request_sent", [False, True])
async def test_connection_error_is_retried_on_the_same_deployment_only_if_never_sent(
    request_sent: bool,
) -> None:
    # A request that may have reached the upstream may be running (and billed) there: the
    # same deployment is not asked again. One that never left (connect failed) may be.
    error = UpstreamConnectionError("gone", deployment="m@a", request_sent=request_sent)
    failover, provider, sleeps, walk = setup({"m@a": [error, None]}, retries=2)
    if request_sent:
        with pytest.raises(AllDeploymentsFailedError) as info:
            await failover.complete([entry("m@a")], {}, walk)
        assert provider.calls == ["m@a"]
        assert "m@a: connection_error" in info.value.message
    else:
        served, _ = await failover.complete([entry("m@a")], {}, walk)
        assert provider.calls == ["m@a", "m@a"] and served.deployment.id == "m@a"
    assert walk.record.fallback_reason == "connection_error"


async def test_open_breaker_is_skipped_without_a_call() -> None:
    failover, provider, sleeps, walk = setup({"m@a": [], "m@b": [None]})
    await failover.breakers.trip("m@a", "auth_failed")
    served, _ = await failover.complete([entry("m@a"), entry("m@b")], {}, walk)
    assert provider.calls == ["m@b"] and served.deployment.id == "m@b"
    assert walk.record.fallback_reason == "circuit_open" and walk.record.attempts == 1
    assert walk.record.attempt_log[0] == {
        "deployment": "m@a",
        "skipped": True,
        "fallback_reason": "circuit_open",
    }


async def test_all_open_is_a_fast_503_with_retry_after_until_the_probe() -> None:
    failover, provider, sleeps, walk = setup({"m@a": []})
    await failover.breakers.trip("m@a", "consecutive_failures")
    with pytest.raises(AllDeploymentsFailedError) as info:
        await failover.complete([entry("m@a")], {}, walk)
    assert provider.calls == []
    assert info.value.status == 503
    assert info.value.headers["retry-after"] == "15"  # BreakerConfig().open_s
