"""``rediss://`` against a real TLS-only redis-server: the hot-path client verifies the
server's certificate and host, logs in and selects the db over TLS, accepts client
certificates, and says what to fix when TLS fails; redis-py, on the same URL, agrees."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from redis.exceptions import ConnectionError, TimeoutError

from app.auth.config import generate_key, hash_key
from app.fastredis import FastRedis
from app.main import create_app
from app.settings import Settings
from tests.conftest import small_config
from tests.support.redis_server import RedisServer, redis_server
from tests.support.tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.redis
PASSWORD = f"tls-test-{uuid.uuid4().hex}"
KEY = generate_key()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis-tls"), PASSWORD, tls=tls_files) as server:
        yield server


@pytest.fixture
async def fast_clients() -> AsyncIterator[list[FastRedis]]:
    clients: list[FastRedis] = []
    yield clients
    for client in clients:
        await client.aclose()


def url(server: RedisServer, *, host: str = "localhost", db: int = 0, query: str = "") -> str:
    return f"rediss://:{PASSWORD}@{host}:{server.port}/{db}" + (f"?{query}" if query else "")


async def test_commands_auth_and_db_work_over_tls_with_the_ca_given(
    tls_server: RedisServer, tls_files: TlsFiles, fast_clients: list[FastRedis]
) -> None:
    key = f"pareto-test-{uuid.uuid4().hex[:8]}"
    fast = FastRedis(url(tls_server, db=3, query=f"ssl_ca_certs={tls_files.ca}"), timeout_s=2)
    fast_clients.append(fast)
    await fast.execute("SET", key, "over-tls", "EX", 60)
    assert await fast.execute("GET", key) == b"over-tls"
    # redis-py on the same URL form sees the key in db 3 (and not in db 0).
    admin = aioredis.Redis.from_url(url(tls_server, db=3, query=f"ssl_ca_certs={tls_files.ca}"))
    other = aioredis.Redis.from_url(url(tls_server, db=0, query=f"ssl_ca_certs={tls_files.ca}"))
    try:
        assert await admin.get(key) == b"over-tls"
        assert await other.get(key) is None
    finally:
        await admin.aclose()
        await other.aclose()


async def test_without_the_ca_the_certificate_is_refused_saying_what_to_set(
    tls_server: RedisServer, fast_clients: list[FastRedis]
) -> None:
    fast = FastRedis(url(tls_server), timeout_s=2)
    fast_clients.append(fast)
    with pytest.raises(ConnectionError) as caught:
        await fast.execute("PING")
    message = str(caught.value)
    assert "not trusted" in message and "ssl_ca_certs=" in message, message
    assert f"localhost:{tls_server.port}" in message
    assert PASSWORD not in message
    # redis-py, on the same URL, refuses it too: verification is on by default for both.
    theirs = aioredis.Redis.from_url(url(tls_server), socket_timeout=2)
    try:
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await theirs.ping()
    finally:
        await theirs.aclose()


async def test_a_host_the_certificate_does_not_name_is_refused(
    tls_server: RedisServer, tls_files: TlsFiles, fast_clients: list[FastRedis]
) -> None:
    # Same server, same trusted CA, but the certificate names localhost, not 127.0.0.1.
    wrong = url(tls_server, host="127.0.0.1", query=f"ssl_ca_certs={tls_files.ca}")
    fast = FastRedis(wrong, timeout_s=2)
    fast_clients.append(fast)
    with pytest.raises(ConnectionError) as caught:
        await fast.execute("PING")
    message = str(caught.value)
    assert "not valid for the host '127.0.0.1'" in message, message
    assert PASSWORD not in message
    theirs = aioredis.Redis.from_url(wrong, socket_timeout=2)
    try:
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await theirs.ping()
    finally:
        await theirs.aclose()
    # Turning the host check off (the redis-py option) lets the same URL in.
    relaxed = FastRedis(wrong + "&ssl_check_hostname=false", timeout_s=2)
    fast_clients.append(relaxed)
    assert await relaxed.ping()


async def test_client_certificates_from_the_url(
    tmp_path: Path, tls_files: TlsFiles, fast_clients: list[FastRedis]
) -> None:
    with redis_server(tmp_path, PASSWORD, tls=tls_files, client_certs=True) as server:
        ca = f"ssl_ca_certs={tls_files.ca}"
        without = FastRedis(url(server, query=ca), timeout_s=2, client_name="probe")
        fast_clients.append(without)
        with pytest.raises(ConnectionError) as caught:
            await without.execute("PING")
        message = str(caught.value)
        assert "ssl_certfile" in message and "ssl_keyfile" in message, message
        assert PASSWORD not in message

        certs = f"{ca}&ssl_certfile={tls_files.client_cert}&ssl_keyfile={tls_files.client_key}"
        fast = FastRedis(url(server, query=certs), timeout_s=2, client_name="probe")
        fast_clients.append(fast)
        assert await fast.ping()
        theirs = aioredis.Redis.from_url(url(server, query=certs), socket_timeout=2)
        try:
            assert await theirs.ping()
        finally:
            await theirs.aclose()


async def test_rediss_to_a_plain_text_port_says_to_check_the_port(
    tmp_path: Path, fast_clients: list[FastRedis]
) -> None:
    with redis_server(tmp_path) as plain:
        fast = FastRedis(f"rediss://127.0.0.1:{plain.port}/0?ssl_cert_reqs=none", timeout_s=0.3)
        fast_clients.append(fast)
        with pytest.raises(TimeoutError, match="check that this port serves TLS"):
            await fast.execute("PING")


async def test_redis_to_a_tls_port_says_to_use_rediss(
    tls_server: RedisServer, fast_clients: list[FastRedis]
) -> None:
    fast = FastRedis(f"redis://:{PASSWORD}@localhost:{tls_server.port}/0", timeout_s=2)
    fast_clients.append(fast)
    with pytest.raises(ConnectionError) as caught:
        await fast.execute("PING")
    assert "use rediss://" in str(caught.value), str(caught.value)
    assert PASSWORD not in str(caught.value)


def gateway_settings(
    tmp_path: Path, redis_url: str, prefix: str, redis_timeout_s: float = 2.0
) -> Settings:
    """A gateway whose key ``KEY`` has rate limits and a budget, its state in ``redis_url``."""
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
    return Settings(
        config=path,
        watch_config=False,
        http_client="httpx",
        redis_url=redis_url,
        redis_timeout_s=redis_timeout_s,
        session_key_prefix=prefix + "session:",
        auth_key_prefix=prefix + "auth:",
    )


async def chat(app: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.post(
            "/v1/chat/completions",
            json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {KEY}", "x-pareto-session-id": "s1"},
        )


async def readyz(app: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.get("/readyz")


async def test_gateway_limits_and_sessions_work_through_rediss(
    tmp_path: Path,
    tls_server: RedisServer,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(gateway_settings(tmp_path, tls_server.url, redis_prefix))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        r = await chat(app)
        assert r.status_code == 200, r.text
        ready = await readyz(app)  # redis-py, on the same URL, over TLS too
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text
    finally:
        await lifespan.__aexit__(None, None, None)
    admin = aioredis.Redis.from_url(tls_server.url)
    try:
        # The session and the budget the request charged live in the TLS server.
        assert [k async for k in admin.scan_iter(match=redis_prefix + "session:*")]
        assert [k async for k in admin.scan_iter(match=redis_prefix + "auth:budget:*")]
        assert [k async for k in admin.scan_iter(match=redis_prefix + "auth:rl:team:req")]
    finally:
        await admin.aclose()
    assert "redis_connect_failed" not in capsys.readouterr().out


async def test_an_untrusted_certificate_is_logged_at_start_without_the_password(
    tmp_path: Path,
    tls_server: RedisServer,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(gateway_settings(tmp_path, url(tls_server), redis_prefix))  # no CA
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        logged = capsys.readouterr().out
        r = await chat(app)
        assert r.status_code == 503, r.text  # limits fail closed
        ready = await readyz(app)
        assert ready.status_code == 503, ready.text
    finally:
        await lifespan.__aexit__(None, None, None)
    lines = [orjson.loads(line) for line in logged.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "redis_connect_failed"]
    assert len(failed) == 1, logged
    assert failed[0]["level"] == "error" and failed[0]["tls"] is True
    assert "not trusted" in failed[0]["detail"] and "ssl_ca_certs=" in failed[0]["detail"]
    everything = logged + capsys.readouterr().out + r.text + ready.text
    assert PASSWORD not in everything


def test_a_missing_ca_file_stops_the_start_naming_the_option(
    tmp_path: Path, tls_server: RedisServer, redis_prefix: str
) -> None:
    missing = url(tls_server, query=f"ssl_ca_certs={tmp_path / 'nope.pem'}")
    with pytest.raises(ValueError, match="ssl_ca_certs=.*nope.pem.*No such file") as caught:
        create_app(gateway_settings(tmp_path, missing, redis_prefix))
    assert PASSWORD not in str(caught.value)


def test_a_tls_connection_reset_during_login_names_the_client_certificate_settings() -> None:
    # Under TLS 1.3 a server that wants a client certificate refuses after the handshake; the
    # client sees its alert or, when the login was already on the way, only a reset. Both say
    # what to fix (seen as a flaky reset in test_client_certificates_from_the_url).
    import ssl

    from redis.exceptions import ConnectionError as RedisConnectionError

    from app.fastredis.address import Address
    from app.fastredis.client import _connect_error

    lost = RedisConnectionError("connection to Redis lost")
    lost.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    tls = ssl.create_default_context()
    address = Address(host="redis.internal", port=6380, password=PASSWORD, tls=tls)
    error = _connect_error(lost, address, 2.0)
    message = str(error)
    assert "ssl_certfile" in message and "ssl_keyfile" in message, message
    assert "redis.internal:6380" in message and PASSWORD not in message
