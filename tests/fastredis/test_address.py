"""PARETO_REDIS_URL means the same to the hot-path client as to redis-py."""

from __future__ import annotations

import ssl

import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.connection import parse_url as parse_url_async
from redis.connection import parse_url

from app.fastredis import parse_address
from tests.support.tls import TlsFiles, make_tls_files

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


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


TLS_QUERIES = [
    "",
    "ssl_cert_reqs=none",
    "ssl_cert_reqs=optional",
    "ssl_cert_reqs=required&ssl_check_hostname=false",
    "ssl_check_hostname=t",
    "ssl_check_hostname=No",
    "ssl_ca_certs={ca}",
    "ssl_ca_path={dir}",
    "ssl_min_version=772",
    "ssl_include_verify_flags=VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN",
    "ssl_exclude_verify_flags=[VERIFY_X509_TRUSTED_FIRST]",
]


@pytest.mark.parametrize("query", TLS_QUERIES)
def test_tls_options_build_the_context_redis_py_builds(query: str, tls_files: TlsFiles) -> None:
    # The gateway opens redis-py and the hot-path client on the same URL: same trust.
    url = "rediss://:pw@cache.example:6380/0?" + query.format(
        ca=tls_files.ca, dir=tls_files.ca.parent
    )
    ours = parse_address(url).tls
    kwargs = dict(parse_url_async(url))  # what redis.asyncio.Redis.from_url(url) connects with
    kwargs.pop("connection_class")
    theirs = SSLConnection(**kwargs).ssl_context.get()
    assert ours is not None
    assert ours.verify_mode == theirs.verify_mode
    assert ours.check_hostname == theirs.check_hostname
    assert ours.minimum_version == theirs.minimum_version
    assert ours.verify_flags == theirs.verify_flags
    assert ours.cert_store_stats() == theirs.cert_store_stats()


def test_client_certificate_files_are_loaded_at_once(tls_files: TlsFiles) -> None:
    url = f"rediss://h/0?ssl_certfile={tls_files.client_cert}&ssl_keyfile={tls_files.client_key}"
    assert parse_address(url).tls is not None
    swapped = f"rediss://h/0?ssl_certfile={tls_files.client_key}&ssl_keyfile={tls_files.ca}"
    with pytest.raises(ValueError, match="client certificate"):
        parse_address(swapped)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs='/nonexistent/ca.pem'"),
        ("ssl_certfile=/nonexistent/c.pem&ssl_password=keypass", "ssl_certfile='/nonexistent"),
        ("ssl_cert_reqs=REQUIRED", "ssl_cert_reqs"),  # redis-py refuses it too
        ("ssl_keyfile=/etc/client.key", "needs 'ssl_certfile'"),
        ("ssl_min_version=tls12", "ssl_min_version"),
        ("ssl_include_verify_flags=VERIFY_NOTHING", "ssl_include_verify_flags"),
    ],
)
def test_bad_tls_options_are_refused_naming_the_option(query: str, names: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(f"rediss://:topsecret@h:6380/0?{query}")
    message = str(caught.value)
    assert names in message
    assert "topsecret" not in message and "keypass" not in message
