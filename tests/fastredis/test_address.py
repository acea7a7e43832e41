"""PARETO_REDIS_URL means the same to the hot-path client as to redis-py."""

from __future__ import annotations

import ssl

import pytest
from redis.connection import parse_url

from app.fastredis import parse_address

URLS = [
    "redis://127.0.0.1:6379/0",
    "redis://localhost",
    "redis://redis:6380/3",
    "redis://:p%40ss%2Fword@host:1234/2",
    "redis://user:pw@host/0",
    "redis://host:6379?db=7",
    "redis://host:6379/1?db=4",
    "rediss://user:pw@managed.example:6380/1",
    "unix:///run/redis.sock",
    "unix://:pw@/run/redis.sock?db=3",
]


@pytest.mark.parametrize("url", URLS)
def test_same_host_port_db_and_credentials_as_redis_py(url: str) -> None:
    ours = parse_address(url)
    theirs = parse_url(url)
    if url.startswith("unix"):
        assert ours.path == theirs["path"]
    else:
        assert (ours.host, ours.port) == (theirs.get("host", "localhost"), theirs.get("port", 6379))
    assert ours.db == theirs.get("db", 0)
    assert ours.username == theirs.get("username")
    assert ours.password == theirs.get("password")
    assert (ours.tls is not None) == url.startswith("rediss")


def test_handshake_logs_in_then_selects() -> None:
    assert parse_address("redis://h/0").handshake() == []
    assert parse_address("redis://:pw@h/2").handshake() == [("AUTH", "pw"), ("SELECT", 2)]
    assert parse_address("redis://u:pw@h").handshake() == [("AUTH", "u", "pw")]


def test_tls_verifies_by_default_and_can_be_relaxed() -> None:
    strict = parse_address("rediss://h:6380/0").tls
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname
    loose = parse_address("rediss://h:6380/0?ssl_cert_reqs=none").tls
    assert loose is not None and loose.verify_mode == ssl.CERT_NONE
    assert not loose.check_hostname


def test_password_never_appears_where_errors_show_the_address() -> None:
    assert parse_address("redis://:topsecret@h:1/0").where == "h:1"


@pytest.mark.parametrize("url", ["http://h:6379", "h:6379", "redis://h/notanumber?db=x"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_address(url)
