from __future__ import annotations

import pytest

from app.catalog import ConfigError, load_catalog
from app.catalog.reload import Reloader
from tests.conftest import small_config


def test_valid_reload_swaps_and_invalid_keeps_old(write_config) -> None:
    path = write_config(small_config())
    applied = []
    reloader = Reloader(path, applied.append)
    old = load_catalog(path)

    config = small_config()
    config["deployments"]["small@sim"]["price"]["input"] = 9.0
    write_config(config)
    new = reloader.reload()
    assert applied == [new]
    assert new.by_id["small@sim"].price_input == pytest.approx(9e-6)
    assert old.by_id["small@sim"].price_input == pytest.approx(1e-7)  # untouched

    config["deployments"]["small@sim"]["price"]["input"] = "free"
    write_config(config)
    with pytest.raises(ConfigError):
        reloader.reload()
    assert applied == [new]


async def test_admin_reload_endpoint(app_client, write_config) -> None:
    client = await app_client(admin_key="admin-secret")
    denied = await client.post("/admin/reload")
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_admin_key"
    ok = await client.post("/admin/reload", headers={"authorization": "Bearer admin-secret"})
    assert ok.status_code == 200, ok.text
    config = small_config()
    config["models"]["small"]["quality"] = "high"
    write_config(config)
    bad = await client.post("/admin/reload", headers={"authorization": "Bearer admin-secret"})
    assert bad.status_code == 400
    assert "models.small.quality" in bad.json()["error"]["message"]
    # The old catalog still serves.
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
