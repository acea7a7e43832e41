"""Two real gateway processes sharing one real Redis enforce one limit and one budget.

Keys are created at run time through one replica's admin API and used through both; the
counts must hold across them exactly (within one request), under concurrent load.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.conftest import small_config
from tests.support.procs import ROOT, Proc, gateway

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

ADMIN = "adm-" + "r3pl1c4" * 6
MSG = [{"role": "user", "content": "Say hello"}]
# small@sim: 7 prompt tokens at $0.1/M + 16 output tokens at $0.2/M.
REQUEST_USD = 7 * 0.1e-6 + 16 * 0.2e-6


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    import uuid

    value = f"pareto-test-{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=value + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, prefix: str) -> Iterator[list[Proc]]:
    tmp = tmp_path_factory.mktemp("replicas")
    config = small_config()
    config["auth"] = {"enabled": True}
    for dep in config["deployments"].values():
        dep["simulation"]["prefix_cache"] = False  # actual cost == the router's estimate
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        "PARETO_REDIS_URL": "redis://127.0.0.1:6379/0",
        "PARETO_REDIS_TIMEOUT_S": "2",
        "PARETO_AUTH_KEY_PREFIX": prefix + "auth:",
        "PARETO_SESSION_KEY_PREFIX": prefix + "session:",
        "PARETO_FEEDBACK_KEY_PREFIX": prefix + "feedback:",
        "PARETO_BREAKER_REDIS_PREFIX": prefix,
        "PARETO_ADMIN_KEY": ADMIN,
    }
    with gateway(path, tmp, env=env, name="a") as a, gateway(path, tmp, env=env, name="b") as b:
        yield [a, b]


def create_key(gw: Proc, name: str, **spec: Any) -> str:
    r = httpx.post(
        f"{gw.url}/admin/keys",
        json={"name": name, **spec},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


async def burst(replicas: list[Proc], key: str, n: int) -> list[httpx.Response]:
    """``n`` concurrent requests, alternating between the replicas."""
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{replicas[i % 2].url}/v1/chat/completions",
                    json={"model": "small", "messages": MSG, "max_tokens": 16},
                    headers={"authorization": f"Bearer {key}"},
                )
                for i in range(n)
            )
        )


def test_two_replicas_enforce_one_rate_limit(replicas) -> None:
    # 3 per minute: a burst of 3, then one every 20 s, far longer than this burst takes.
    key = create_key(replicas[0], "rate-shared", rate_limit={"requests_per_minute": 3})
    responses = asyncio.run(burst(replicas, key, 20))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 3, statuses  # per-process counting would let 6 through
    assert statuses.count(429) == 17
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 21  # 20 s, rounded up
    assert "3 requests per minute" in refused.json()["error"]["message"]


def test_two_replicas_enforce_one_budget(replicas) -> None:
    budget = 4.5 * REQUEST_USD
    key = create_key(replicas[1], "budget-shared", budget={"daily_usd": budget})
    responses = asyncio.run(burst(replicas, key, 24))
    statuses = [r.status_code for r in responses]
    served = statuses.count(200)
    # Admitted while spent + held < budget: 5 requests of exactly REQUEST_USD each.
    assert served == 5, statuses
    assert statuses.count(402) == 24 - served
    usage = key_usage(replicas[0], "budget-shared")
    assert usage["held_usd"] == 0
    assert usage["today_usd"] == pytest.approx(served * REQUEST_USD, rel=1e-6)
    assert usage["today_usd"] <= budget + REQUEST_USD  # over by at most one request
    assert sum(
        float(r.headers["x-pareto-cost-usd"]) for r in responses if r.status_code == 200
    ) == (pytest.approx(usage["today_usd"], rel=1e-6))


def key_usage(gw: Proc, name: str) -> dict[str, float]:
    r = httpx.get(f"{gw.url}/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    entry = next(k for k in r.json()["data"] if k["name"] == name)
    usage: dict[str, float] = entry["usage"]
    return usage


def cli(gw: Proc, *args: str, admin: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PARETO_ADMIN_KEY", None)
    if admin:
        env["PARETO_ADMIN_KEY"] = admin
    return subprocess.run(
        [sys.executable, "-m", "app", "keys", "--gateway", gw.url, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )


def test_cli_creates_lists_and_revokes_keys_on_every_replica(replicas) -> None:
    a, b = replicas
    made = cli(a, "create", "--name", "cli-team", "--models", "small", "--rpm", "100")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("pk-") and len(key) > 40 and "cli-team" in made.stderr

    def call(gw: Proc, model: str = "small") -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": model, "messages": MSG},
            headers={"authorization": f"Bearer {key}"},
        )

    assert call(b).status_code == 200
    assert call(b, "big").status_code == 403  # the key's model list holds on every replica
    listed = cli(b, "list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-team"))
    assert "redis" in row and "active" in row and "small" in row
    assert key not in listed.stdout  # the key is shown once, at creation, never again

    again = cli(a, "create", "--name", "cli-team")
    assert again.returncode != 0 and "409" in again.stderr

    assert cli(a, "revoke", "cli-team").returncode == 0
    for gw in replicas:
        r = call(gw)
        assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    assert "revoked" in cli(a, "list").stdout

    no_admin = cli(a, "list", admin="wrong-admin-key")
    assert no_admin.returncode != 0 and "401" in no_admin.stderr
    assert cli(a, "revoke", "nobody").returncode != 0


def test_static_key_entry_from_cli_works_in_a_config(tmp_path: Path, write_config) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "keys",
            "create",
            "--static",
            "--name",
            "ops",
            "--daily-usd",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    entry = yaml.safe_load(made.stderr.split("\n", 2)[2])
    assert key not in made.stderr
    config = small_config()
    config["auth"] = entry["auth"]
    from app.auth.config import hash_key
    from app.catalog import load_catalog

    catalog = load_catalog(write_config(config))
    assert catalog.auth.by_hash[hash_key(key)].daily_usd == 5
