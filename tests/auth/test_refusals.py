"""Requests refused by authentication leave a record: a log line and a count, never the key."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from app.auth.config import generate_key, hash_key
from tests.auth.test_keys import FULL, MSG, REVOKED, SMALL_ONLY, auth_config, bearer
from tests.support.prom import parse, value

PROMPT = "the secret plan for tomorrow"
BODY = {"model": "small", "messages": [{"role": "user", "content": PROMPT}]}
WRONG = "pk-" + "Wq7" * 14  # well-formed, unknown to the gateway
REFUSED = {"model": "none", "deployment": "none", "policy": "none"}


def fingerprint(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def output(capsys) -> tuple[str, list[dict[str, Any]]]:
    """Everything the gateway printed, and its request records."""
    captured = capsys.readouterr()
    text = captured.out + captured.err
    lines = [orjson.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return text, [line for line in lines if line.get("event") == "request"]


async def scrape(client) -> tuple[str, Any]:
    text = (await client.get("/metrics")).text
    return text, parse(text)


@pytest.mark.parametrize(
    ("authorization", "code", "secret", "name", "print_"),
    [
        (None, "missing_api_key", None, None, None),
        ("Basic dXNlcjpwYXNzd29yZA==", "malformed_api_key", "dXNlcjpwYXNzd29yZA", None, None),
        (f"Bearer {WRONG}", "invalid_api_key", WRONG, None, fingerprint(WRONG)),
        (f"bearer {REVOKED}", "revoked_api_key", REVOKED, "old", fingerprint(REVOKED)),
    ],
    ids=["missing", "malformed", "unknown", "revoked"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),  # the plain-ASGI endpoint
        ("GET", "/v1/models"),  # FastAPI routes, behind AuthMiddleware
        ("POST", "/v1/route"),
    ],
)
async def test_refused_key_is_recorded_and_counted_without_the_key(
    app_client, capsys, authorization, code, secret, name, print_, method, path
) -> None:
    client = await app_client(auth_config())
    _, before = await scrape(client)
    capsys.readouterr()
    headers = {"x-request-id": "req-refused-1"}
    if authorization is not None:
        headers["authorization"] = authorization
    json_body = BODY if method == "POST" else None
    r = await client.request(method, path, json=json_body, headers=headers)
    assert r.status_code == 401, r.text
    metrics_text, after = await scrape(client)
    text, records = output(capsys)
    (record,) = records
    assert record["request_id"] == "req-refused-1" == r.headers["x-request-id"]
    assert record["status"] == 401 and record["user_visible_error"] == code
    assert record["path"] == path
    assert record["api_key_name"] == name
    assert record["api_key_fingerprint"] == print_
    assert record["deployment"] is None and record["cost_usd"] == 0
    assert record["total_latency_ms"] > 0 and record["gateway_overhead_ms"] is None
    assert value(after, "pareto_requests_total", **REFUSED, status="401") - value(
        before, "pareto_requests_total", **REFUSED, status="401"
    ) == pytest.approx(1)
    # A refusal is not a served request: it leaves the overhead histogram alone.
    assert value(after, "pareto_gateway_overhead_seconds_count") == value(
        before, "pareto_gateway_overhead_seconds_count"
    )
    # Never the key, nor its whole hash, nor the prompt: not in the log, not in the metrics.
    assert PROMPT not in text
    if secret is not None:
        full_hash = hashlib.sha256(secret.encode()).hexdigest()
        for where in (text, metrics_text, r.text):
            assert secret not in where and secret[-12:] not in where
            assert full_hash not in where


async def test_a_flood_of_bad_keys_is_counted_one_by_one(app_client, capsys) -> None:
    client = await app_client(auth_config())
    keys = [generate_key() for _ in range(25)]
    for key in keys:
        r = await client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
        assert r.status_code == 401
    metrics_text, samples = await scrape(client)
    assert value(samples, "pareto_requests_total", **REFUSED, status="401") == 25
    text, records = output(capsys)
    assert len(records) == 25
    assert {rec["api_key_fingerprint"] for rec in records} == {fingerprint(k) for k in keys}
    assert not any(key in text or key in metrics_text for key in keys)


async def test_admin_refusals_are_recorded_too(app_client, capsys) -> None:
    admin = "admin-" + "Rt5" * 10
    client = await app_client(auth_config(), admin_key=admin)
    capsys.readouterr()
    wrong = "admin-" + "Yh2" * 10
    r = await client.post("/admin/reload", headers=bearer(wrong))
    assert r.status_code == 401
    r = await client.get("/admin/keys", headers=bearer(FULL))  # a gateway key is not admin
    assert r.status_code == 401
    assert (await client.post("/admin/reload", headers=bearer(admin))).status_code == 200
    _, samples = await scrape(client)
    text, records = output(capsys)
    assert [(rec["path"], rec["status"], rec["user_visible_error"]) for rec in records] == [
        ("/admin/reload", 401, "invalid_admin_key"),
        ("/admin/keys", 401, "invalid_admin_key"),
    ]
    # A gateway key used on /admin is recognisable by its fingerprint, not by its value.
    assert records[1]["api_key_fingerprint"] == fingerprint(FULL)
    assert wrong not in text and FULL not in text and admin not in text
    assert value(samples, "pareto_requests_total", **REFUSED, status="401") == 2

    disabled = await app_client(auth_config())  # no PARETO_ADMIN_KEY: admin is off
    capsys.readouterr()
    r = await disabled.get("/admin/keys", headers=bearer(wrong))
    assert r.status_code == 403
    _, records = output(capsys)
    assert [(rec["path"], rec["status"], rec["user_visible_error"]) for rec in records] == [
        ("/admin/keys", 403, "admin_disabled")
    ]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
async def test_a_key_refused_a_model_is_recorded_and_counted_as_refused(
    app_client, capsys, path
) -> None:
    client = await app_client(auth_config())
    body = {"model": "big", "messages": [{"role": "user", "content": PROMPT}]}
    capsys.readouterr()
    r = await client.post(path, json=body, headers={**bearer(SMALL_ONLY), "x-request-id": "r-403"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "model_not_allowed"
    metrics_text, samples = await scrape(client)
    assert value(samples, "pareto_requests_total", **REFUSED, status="403") == 1
    text, records = output(capsys)
    (record,) = records
    assert record["request_id"] == "r-403" and record["path"] == path
    assert record["status"] == 403 and record["user_visible_error"] == "model_not_allowed"
    assert record["api_key_name"] == "small-only" and record["api_key_fingerprint"] is None
    assert record["deployment"] is None and record["cost_usd"] == 0
    # The key is named, never shown; the prompt is not logged.
    for where in (text, metrics_text):
        assert SMALL_ONLY not in where and PROMPT not in where


async def test_a_key_refused_a_policy_override_on_route_is_recorded(app_client, capsys) -> None:
    cheap_only = generate_key()
    client = await app_client(
        auth_config(**{"cheap-only": {"hash": hash_key(cheap_only), "policies": ["cheap"]}})
    )
    capsys.readouterr()
    body = {"model": "cheap", "messages": MSG}
    r = await client.post(
        "/v1/route", json=body, headers={**bearer(cheap_only), "x-pareto-policy": "best"}
    )
    assert r.status_code == 403, r.text
    _, records = output(capsys)
    assert [(rec["path"], rec["status"], rec["api_key_name"]) for rec in records] == [
        ("/v1/route", 403, "cheap-only")
    ]
    # A dry run that is answered is not a request: no record, no count.
    r = await client.post("/v1/route", json=body, headers=bearer(cheap_only))
    assert r.status_code == 200, r.text
    _, records = output(capsys)
    assert records == []
