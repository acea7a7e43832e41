"""Breakers shared by two gateway processes through a real Redis; Redis loss degrades to local."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from app.reliability import BreakerConfig, Breakers, ManualClock
from tests.conftest import POLICIES
from tests.support.procs import free_port, gateway, simulator
from tests.support.redis_server import redis_server

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.redis
@pytest.mark.e2e
def test_breaker_opened_by_one_gateway_sheds_traffic_on_the_other(
    tmp_path: Path, redis_prefix: str
) -> None:
    with simulator(tmp_path, "--instant") as sim:
        config = {
            "include": [str(POLICIES)],
            "auth": {"enabled": False},
            "models": {"m": {"quality": 40, "context_window": 32000}},
            "deployments": {
                # Nothing listens there: every call is a connection_error.
                "m@down": {
                    "kind": "openai_compat",
                    "base_url": f"http://127.0.0.1:{free_port()}/v1",
                    "price": {"input": 0.1, "output": 0.1},
                    "ttft_s": 0.1,
                    "decode_tps": 100,
                },
                "m@up": {
                    "kind": "openai_compat",
                    "base_url": sim.url,
                    "price": {"input": 1, "output": 1},
                    "ttft_s": 0.1,
                    "decode_tps": 100,
                },
            },
        }
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {
            "PARETO_REDIS_URL": "redis://127.0.0.1:6379/0",
            "PARETO_BREAKER_REDIS_PREFIX": redis_prefix,
            "PARETO_BREAKER_FAILURES": "3",
            "PARETO_BREAKER_OPEN_S": "120",
            "PARETO_MAX_RETRIES": "0",
        }
        with (
            gateway(path, tmp_path, env=env, name="gw-a") as gw_a,
            gateway(path, tmp_path, env=env, name="gw-b") as gw_b,
        ):
            body = {"model": "m", "messages": MSG}
            for _ in range(3):
                r = httpx.post(f"{gw_a.url}/v1/chat/completions", json=body, timeout=10)
                assert r.status_code == 200
                assert r.headers["x-pareto-fallback-reason"] == "connection_error"
            # Gateway B never called m@down, yet skips it: A's failures opened the shared
            # breaker (B's router still planned m@down; the walk's atomic check in Redis said no).
            r = httpx.post(f"{gw_b.url}/v1/chat/completions", json=body, timeout=10)
            assert r.status_code == 200
            assert r.headers["x-pareto-fallback-reason"] == "circuit_open"
            assert r.headers["x-pareto-attempts"] == "1"
            assert r.headers["x-pareto-deployment"] == "m@up"


@pytest.mark.redis
async def test_redis_outage_degrades_to_local_and_recovers(tmp_path: Path) -> None:
    config = BreakerConfig(failures=2, open_s=5)
    clock = ManualClock()
    with redis_server(tmp_path) as server:
        client = aioredis.Redis.from_url(server.url, socket_timeout=0.2)
        board = Breakers(config, redis=client, clock=clock, redis_retry_s=1.0)
        try:
            await board.failure("m@p")
            assert board.shared and not board.redis_degraded
            server.stop()
            # Redis is gone: the breaker keeps counting locally, and says so.
            await board.failure("m@p")
            assert board.redis_degraded and not board.shared
            assert board.states()["m@p"] == "open"
            assert not await board.acquire("m@p")
            assert board.redis_failures_total >= 1
            server.start()  # same port, empty data
            clock.advance(1.0)  # the retry interval: the next operation tries Redis again
            assert await board.acquire("m@p")  # Redis' (empty) state is authoritative again
            assert board.shared and not board.redis_degraded
        finally:
            await client.aclose()
