"""No secret ever leaves the gateway: a run full of failures, every log line and response
captured, searched for every provider key, gateway key and the admin key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from app.auth.config import generate_key, hash_key
from tests.conftest import POLICIES
from tests.support.procs import free_port, gateway, simulator

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

SIM_KEY = "sk-sim-" + uuid.uuid4().hex + "Q1"
DEAD_KEY = "sk-dead-" + uuid.uuid4().hex + "Q2"
ADMIN = "adm-" + uuid.uuid4().hex + "Q3"
STATIC = generate_key()
BROKE = generate_key()
SLOW = generate_key()
MSG = [{"role": "user", "content": "Tell me something"}]


def config(sim_url: str) -> dict[str, object]:
    upstream = {"price": {"input": 0.1, "output": 0.2}, "ttft_s": 0.05, "decode_tps": 1000}
    return {
        "include": [str(POLICIES)],
        "models": {
            "small": {"quality": 30, "context_window": 32000},
            "big": {"quality": 60, "context_window": 200000},
        },
        "deployments": {
            "small@simhttp": {
                "kind": "openai_compat",
                "base_url": sim_url,
                "api_key_env": "SIM_KEY",
                **upstream,
            },
            "big@dead": {
                "kind": "openai_compat",
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "api_key_env": "DEAD_KEY",
                **upstream,
            },
        },
        "auth": {
            "keys": {
                "static": {"hash": hash_key(STATIC)},
                "broke": {"hash": hash_key(BROKE), "budget": {"daily_usd": 1e-9}},
                "slow": {"hash": hash_key(SLOW), "rate_limit": {"requests_per_minute": 1}},
            }
        },
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[httpx.Response], str]]:
    """Start the stack, send every kind of request, return (responses, gateway log)."""
    tmp = tmp_path_factory.mktemp("secrets")
    prefix = f"pareto-test-{uuid.uuid4().hex[:10]}:"
    env = {
        "SIM_KEY": SIM_KEY,
        "DEAD_KEY": DEAD_KEY,
        "PARETO_ADMIN_KEY": ADMIN,
        "PARETO_LOG_LEVEL": "debug",
        "PARETO_REDIS_URL": "redis://127.0.0.1:6379/0",
        "PARETO_AUTH_KEY_PREFIX": prefix + "auth:",
        "PARETO_SESSION_KEY_PREFIX": prefix + "session:",
        "PARETO_FEEDBACK_KEY_PREFIX": prefix + "feedback:",
        "PARETO_BREAKER_REDIS_PREFIX": prefix,
    }
    responses: list[httpx.Response] = []
    try:
        with simulator(tmp, "--instant") as sim:
            path: Path = tmp / "gateway.yaml"
            path.write_text(yaml.safe_dump(config(sim.url)))
            with gateway(path, tmp, env=env) as gw:
                log_text = exercise(gw.url, responses)
            log_text = gw.log_text()
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    yield responses, log_text


def exercise(url: str, out: list[httpx.Response]) -> str:
    def auth(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    with httpx.Client(base_url=url, timeout=30) as c:

        def chat(key: str, model: str = "small", content: str = "hello", **extra: object) -> None:
            messages = [{"role": "user", "content": content}]
            out.append(
                c.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": messages, **extra},
                    headers=auth(key),
                )
            )

        chat(STATIC)
        chat(STATIC, stream=True, stream_options={"include_usage": True})
        for key in (BROKE, BROKE, SLOW, SLOW, SLOW):
            chat(key)
        chat(STATIC, content="[sim:error=401] who am I")  # upstream refuses the provider key
        chat(STATIC, content="[sim:error=500] boom")
        chat(STATIC, content="[sim:error=429] slow down")
        chat(STATIC, model="big")  # the big deployment's port is closed
        chat(STATIC, content="[sim:cut=2] cut me", stream=True)
        chat(STATIC, model="auto")
        out.append(
            c.post("/v1/route", json={"model": "auto", "messages": MSG}, headers=auth(STATIC))
        )
        out.append(c.get("/v1/models", headers=auth(STATIC)))
        for wrong in (ADMIN, SIM_KEY, DEAD_KEY, "pk-" + "0" * 43, STATIC + "x", STATIC[:-1]):
            chat(wrong)
        for header in (f"Basic {STATIC}", STATIC, f"Bearer {STATIC} {ADMIN}", f"Token {SIM_KEY}"):
            out.append(
                c.post(
                    "/v1/chat/completions",
                    json={"model": "small", "messages": MSG},
                    headers={"authorization": header},
                )
            )
        out.append(c.post("/v1/chat/completions", content=b"{broken", headers=auth(STATIC)))
        out.append(c.post("/v1/chat/completions", json={"model": 5}, headers=auth(STATIC)))
        # Admin endpoints: a gateway key is not the admin key; a wrong admin key is refused.
        for key in (STATIC, SIM_KEY, ADMIN + "x"):
            out.append(c.get("/admin/keys", headers=auth(key)))
            out.append(c.post("/admin/reload", headers=auth(key)))
        made = c.post(
            "/admin/keys", json={"name": "runtime", "models": ["small"]}, headers=auth(ADMIN)
        )
        assert made.status_code == 201, made.text
        runtime = made.json()["key"]
        SECRETS["runtime key"] = runtime
        out.append(httpx.Response(201, headers=made.headers))  # its body is the key, by design
        chat(runtime)
        chat(runtime, model="big")
        out.append(c.get("/admin/keys", headers=auth(ADMIN)))
        out.append(c.delete("/admin/keys/runtime", headers=auth(ADMIN)))
        chat(runtime)
        out.append(c.post("/admin/keys", json={"name": "bad name!"}, headers=auth(ADMIN)))
        for path in ("/metrics", "/readyz", "/healthz", "/openapi.json", "/nope"):
            out.append(c.get(path))
    return ""


SECRETS: dict[str, str] = {
    "provider key (sim)": SIM_KEY,
    "provider key (dead)": DEAD_KEY,
    "admin key": ADMIN,
    "gateway key (static)": STATIC,
    "gateway key (broke)": BROKE,
    "gateway key (slow)": SLOW,
}


def test_the_run_includes_the_failures_it_claims(run) -> None:
    responses, log_text = run
    statuses = {r.status_code for r in responses}
    assert {200, 400, 401, 402, 403, 404, 429, 502, 503} <= statuses, [
        (r.status_code, r.text[:150]) for r in responses
    ]
    assert '"event": "request"' in log_text or '"event":"request"' in log_text
    assert "runtime key" in SECRETS


def test_no_secret_appears_in_any_response_or_log_line(run) -> None:
    responses, log_text = run
    haystacks = {"gateway log": log_text}
    for i, r in enumerate(responses):
        headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        body = r.text
        haystacks[f"response {i} ({r.status_code})"] = headers + "\n" + body
    for what, secret in SECRETS.items():
        needles = {secret, secret[-10:], secret[3:15]}
        for where, text in haystacks.items():
            for needle in needles:
                assert needle not in text, f"{what} leaked into {where}"
