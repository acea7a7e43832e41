"""Session stickiness across real gateway processes, a shared Redis, and a Redis outage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml

from tests.conftest import small_config
from tests.support.procs import gateway, simulator
from tests.support.redis_server import redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SYSTEM = {"role": "system", "content": "You are a patient maths tutor. " * 12}


class Conversation:
    """A chat client that resends its whole history every turn, as chat UIs do."""

    def __init__(self, opening: str, session_id: str | None = None) -> None:
        self.messages: list[dict[str, Any]] = [SYSTEM]
        self.opening = opening
        self.headers = {"x-pareto-session-id": session_id} if session_id else {}
        self.turn = 0

    def say(self, base_url: str) -> httpx.Response:
        self.turn += 1
        self.messages.append(
            {"role": "user", "content": f"{self.opening}: question {self.turn}, " + "why? " * 20}
        )
        r = httpx.post(
            f"{base_url}/v1/chat/completions",
            json={"model": "small", "messages": self.messages},
            headers=self.headers,
            timeout=10,
        )
        if r.status_code == 200:
            self.messages.append(r.json()["choices"][0]["message"])
        else:
            self.messages.pop()
        return r


def cached_tokens(r: httpx.Response) -> int:
    return int(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def shared_prefix(redis_prefix: str) -> Iterator[str]:
    yield redis_prefix
    client = redis.Redis()
    keys = list(client.scan_iter(match=redis_prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_two_gateways_sharing_redis_serve_alternate_turns_on_one_deployment(
    tmp_path: Path, shared_prefix: str
) -> None:
    config = write(tmp_path / "gw.yaml", small_config())
    env = {
        "PARETO_REDIS_URL": "redis://127.0.0.1:6379/0",
        "PARETO_SESSION_KEY_PREFIX": shared_prefix,
        "PARETO_REDIS_TIMEOUT_S": "0.5",
    }
    with simulator(tmp_path, "--config", str(config), "--instant") as sim:
        env["PARETO_SIMULATED_BASE_URL"] = sim.url
        with (
            gateway(config, tmp_path, env=env, name="a") as gw_a,
            gateway(config, tmp_path, env=env, name="b") as gw_b,
        ):
            chat = Conversation("Teach me limits")  # no session id: the key is derived
            replies = [chat.say(gw_a.url if i % 2 == 0 else gw_b.url) for i in range(6)]
    assert [r.status_code for r in replies] == [200] * 6
    assert len({r.headers["x-pareto-deployment"] for r in replies}) == 1
    # Gateway b never saw turn 1: it can only know the session through the shared Redis.
    assert [r.headers["x-pareto-session"] for r in replies] == ["new"] + ["sticky"] * 5
    # The provider cache stays warm whichever gateway serves the turn.
    assert all(cached_tokens(r) > 0 for r in replies[1:])


def test_redis_killed_mid_run_fails_no_request_and_stickiness_returns(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.yaml", small_config())
    with redis_server(tmp_path) as server:
        env = {
            "PARETO_REDIS_URL": server.url,
            "PARETO_REDIS_TIMEOUT_S": "0.2",
            "PARETO_SESSION_REDIS_RETRY_S": "0.2",
        }
        with gateway(config, tmp_path, env=env) as gw:
            store = redis.Redis(port=server.port, socket_timeout=1)
            before = Conversation("Before", "s-before")
            replies = [before.say(gw.url) for _ in range(3)]

            server.stop()
            during = Conversation("During", "s-during")
            for _ in range(4):
                replies.append(before.say(gw.url))
                replies.append(during.say(gw.url))

            outage_check = httpx.get(f"{gw.url}/readyz").json()["checks"]["sessions"]

            server.start()
            time.sleep(0.3)  # past PARETO_SESSION_REDIS_RETRY_S: the next request probes Redis
            after = Conversation("After", "s-after")
            resumed = [after.say(gw.url) for _ in range(3)]
            resumed_check = httpx.get(f"{gw.url}/readyz").json()["checks"]["sessions"]
            resumed.append(before.say(gw.url))  # Redis lost it in the restart: copied back
            keys_after = store.dbsize()
            store.close()
            log = gw.log_text()

    assert [r.status_code for r in replies + resumed] == [200] * len(replies + resumed)
    sticky = [r.headers["x-pareto-session"] for r in replies[3:]]
    # During the outage: the old session stays put and a new one becomes sticky (local store).
    assert sticky == ["sticky", "new"] + ["sticky"] * 6
    assert [r.headers["x-pareto-session"] for r in resumed] == ["new", "sticky", "sticky", "sticky"]
    assert keys_after >= 1  # sessions are written to Redis again
    assert outage_check == "redis (degraded: local store)"
    assert resumed_check == "redis"
    events = [orjson.loads(x).get("event") for x in log.splitlines() if x.startswith("{")]
    assert events.count("session_store_degraded") == 1
    assert events.count("session_store_recovered") == 1
