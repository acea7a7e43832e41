"""Gateway keys: who may call, and which models they may reach (in-process app)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.auth.config import generate_key, hash_key
from app.catalog import ConfigError, load_catalog
from tests.conftest import ROOT, small_config

MSG = [{"role": "user", "content": "Say hello"}]


def log_lines(capsys) -> list[dict[str, Any]]:
    """The JSON log lines the gateway printed so far."""
    return [
        orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]


FULL = generate_key()
SMALL_ONLY = generate_key()
REVOKED = generate_key()


def auth_config(**extra: Any) -> dict[str, Any]:
    config = small_config()
    config["auth"] = {
        "enabled": True,
        "keys": {
            "full": {"hash": hash_key(FULL)},
            "small-only": {"hash": hash_key(SMALL_ONLY), "models": ["small"]},
            "old": {"hash": hash_key(REVOKED), "revoked": True},
            **extra,
        },
    }
    return config


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def chat(client, model: str = "small", **headers: str):
    return await client.post(
        "/v1/chat/completions", json={"model": model, "messages": MSG}, headers=headers
    )


@pytest.mark.parametrize(
    ("headers", "code", "fragment"),
    [
        ({}, "missing_api_key", "missing API key"),
        ({"authorization": ""}, "missing_api_key", "missing API key"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "malformed_api_key", "expected 'Bearer <key>'"),
        ({"authorization": "Bearer"}, "malformed_api_key", "expected 'Bearer <key>'"),
        ({"authorization": "Bearer short"}, "malformed_api_key", "8-512 printable"),
        ({"authorization": "Bearer pk-has a space"}, "malformed_api_key", "no spaces"),
        (bearer("pk-" + "x" * 43), "invalid_api_key", "does not know the key"),
        (bearer(REVOKED), "revoked_api_key", "'old' has been revoked"),
    ],
)
async def test_missing_malformed_wrong_and_revoked_keys_get_401(
    app_client, headers, code, fragment
) -> None:
    client = await app_client(auth_config())
    r = await client.post(
        "/v1/chat/completions", json={"model": "small", "messages": MSG}, headers=headers
    )
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and fragment in err["message"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    # Other /v1 endpoints are guarded the same way; health is not.
    assert (await client.get("/v1/models", headers=headers)).status_code == 401
    assert (await client.get("/healthz")).status_code == 200


async def test_error_never_echoes_the_presented_key(app_client) -> None:
    client = await app_client(auth_config())
    wrong = "pk-" + "Zq9" * 14
    r = await chat(client, **bearer(wrong))
    assert r.status_code == 401
    assert wrong not in r.text and wrong[-8:] not in r.text


async def test_valid_key_is_served_and_named_in_the_record(app_client, capsys) -> None:
    client = await app_client(auth_config())
    r = await chat(client, **bearer(FULL))
    assert r.status_code == 200, r.text
    # The OpenAI SDK's casing varies; the scheme is case-insensitive.
    r = await chat(client, authorization=f"bearer {FULL}")
    assert r.status_code == 200
    records = [e for e in log_lines(capsys) if e["event"] == "request"]
    assert records and records[0]["api_key_name"] == "full"


async def test_key_limited_to_a_model_cannot_call_another(app_client) -> None:
    client = await app_client(auth_config())
    r = await chat(client, "big", **bearer(SMALL_ONLY))
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "model_not_allowed" and err["type"] == "permission_error"
    assert "'small-only' may not use model 'big'" in err["message"]
    assert "small" in err["message"]
    assert (await chat(client, "small", **bearer(SMALL_ONLY))).status_code == 200


@pytest.mark.parametrize("policy", ["auto", "best", "balanced", "cheap", "fast"])
async def test_policy_routing_only_chooses_among_the_keys_models(app_client, policy) -> None:
    big_only = generate_key()
    client = await app_client(
        auth_config(**{"big-only": {"hash": hash_key(big_only), "models": ["big"]}})
    )
    served = set()
    for key, model in ((SMALL_ONLY, "small"), (big_only, "big")):
        for _ in range(3):
            r = await chat(client, policy, **bearer(key))
            if r.status_code == 200:
                assert r.headers["x-pareto-model"] == model
                served.add(model)
            else:  # the policy excludes every model the key may use: refused, never widened
                assert r.status_code in (400, 403), r.text
                assert r.headers.get("x-pareto-model") is None
    assert served  # each policy serves at least one of the two keys


async def test_key_limited_to_policies(app_client) -> None:
    only_cheap = generate_key()
    client = await app_client(
        auth_config(**{"cheap-only": {"hash": hash_key(only_cheap), "policies": ["cheap"]}})
    )
    r = await chat(client, "best", **bearer(only_cheap))
    assert r.status_code == 403 and "routing policy 'best'" in r.json()["error"]["message"]
    assert (await chat(client, "cheap", **bearer(only_cheap))).status_code == 200


async def test_models_list_shows_only_what_the_key_may_use(app_client) -> None:
    client = await app_client(auth_config())
    r = await client.get("/v1/models", headers=bearer(SMALL_ONLY))
    ids = {m["id"] for m in r.json()["data"]}
    assert "small" in ids and "big" not in ids and "auto" in ids
    r = await client.get("/v1/models", headers=bearer(FULL))
    assert {"small", "big"} <= {m["id"] for m in r.json()["data"]}


async def test_auth_is_on_unless_the_config_switches_it_off(app_client) -> None:
    config = small_config()
    del config["auth"]
    client = await app_client(config)
    r = await chat(client)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


async def test_switching_auth_off_is_logged_loudly(app_client, capsys) -> None:
    client = await app_client(small_config())
    assert (await chat(client)).status_code == 200
    warnings = [e for e in log_lines(capsys) if e["event"] == "auth_disabled"]
    assert warnings and warnings[0]["level"] == "warning"
    assert "AUTHENTICATION IS OFF" in warnings[0]["message"]


def test_demo_config_switches_auth_off_and_production_config_does_not() -> None:
    assert load_catalog(ROOT / "config" / "demo.yaml").auth.enabled is False
    production = load_catalog(ROOT / "config" / "catalog.yaml", env={})
    assert production.auth.enabled is True


def test_config_rejects_plain_keys_unknown_models_and_reused_hashes(write_config) -> None:
    config = small_config()
    config["auth"] = {
        "keys": {
            "plain": {"hash": FULL},
            "a": {"hash": hash_key(SMALL_ONLY), "models": ["nope"], "policies": ["nada"]},
            "b": {"hash": hash_key(SMALL_ONLY)},
        }
    }
    with pytest.raises(ConfigError) as info:
        load_catalog(write_config(config))
    text = "\n".join(info.value.problems)
    assert "auth.keys.plain.hash" in text and "never put the key itself" in text
    assert FULL not in text
    config["auth"]["keys"].pop("plain")
    with pytest.raises(ConfigError) as info:
        load_catalog(write_config(config))
    text = "\n".join(info.value.problems)
    assert "auth.keys.a.models: unknown model 'nope'" in text
    assert "auth.keys.a.policies: unknown policy 'nada'" in text
    assert "auth.keys.b.hash: same key hash as auth.keys.a" in text


async def test_revoking_a_static_key_takes_effect_on_reload(app_client, write_config) -> None:
    config = auth_config()
    admin = "adm-" + "k" * 40
    client = await app_client(config, admin_key=admin)
    assert (await chat(client, **bearer(FULL))).status_code == 200
    config["auth"]["keys"]["full"]["revoked"] = True
    write_config(config)
    # A gateway key is not the admin key.
    r = await client.post("/admin/reload", headers=bearer(FULL))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key"
    r = await client.post("/admin/reload", headers=bearer(admin))
    assert r.status_code == 200, r.text
    r = await chat(client, **bearer(FULL))
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
