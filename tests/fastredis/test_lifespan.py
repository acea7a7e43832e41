"""The app builds one hot-path client in its lifespan, sends the per-request calls through
it, and closes it on shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from app.main import create_app
from tests.fastredis.test_tls import KEY, gateway_settings

pytestmark = pytest.mark.redis
URL = "redis://127.0.0.1:6379/0"


async def test_sessions_and_limits_use_the_hot_client_which_shutdown_closes(
    tmp_path: Path, redis_prefix: str
) -> None:
    settings = gateway_settings(tmp_path, URL, redis_prefix, redis_timeout_s=1.0)
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
