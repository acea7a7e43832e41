"""The app builds one hot-path client in its lifespan, sends the per-request calls through
it, and closes it on shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from app.auth.config import generate_key, hash_key
from app.main import create_app
from app.settings import Settings
from tests.conftest import small_config

pytestmark = pytest.mark.redis
URL = "redis://127.0.0.1:6379/0"
KEY = generate_key()


async def test_sessions_and_limits_use_the_hot_client_which_shutdown_closes(
    tmp_path: Path, redis_prefix: str
) -> None:
    config: dict[str, Any] = small_config()
    config["auth"] = {
        "keys": {
            "team": {
                "hash": hash_key(KEY),
                "rate_limit": {"requests_per_minute": 1000},
                "budget": {"daily_usd": 10},
            }
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = Settings(
        config=path,
        watch_config=False,
        http_client="httpx",
        redis_url=URL,
        redis_timeout_s=1.0,
        session_key_prefix=redis_prefix + "session:",
        auth_key_prefix=redis_prefix + "auth:",
    )
    app = create_app(settings)
    admin = aioredis.Redis.from_url(URL, socket_timeout=2)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        hot = app.state.hot_redis
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client:
            r = await client.post(
                "/v1/chat/completions",
                json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {KEY}", "x-pareto-session-id": "s1"},
            )
        assert r.status_code == 200, r.text
        hot_id = await hot.execute("CLIENT", "ID")
        listed = (await admin.execute_command("CLIENT", "LIST", "ID", hot_id)).decode()
        assert "name=pareto-hot" in listed
        # The request's session and its budget live in Redis, written by the hot client.
        assert [k async for k in admin.scan_iter(match=redis_prefix + "session:*")]
        assert [k async for k in admin.scan_iter(match=redis_prefix + "auth:budget:*")]
    finally:
        await lifespan.__aexit__(None, None, None)
    for _ in range(100):  # Redis notices the close on its next event-loop turn
        if not (await admin.execute_command("CLIENT", "LIST", "ID", hot_id)).strip():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the hot-path connection outlived the app")
    keys = [k async for k in admin.scan_iter(match=redis_prefix + "*")]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()
