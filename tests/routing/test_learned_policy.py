"""A policy with `learned_router:` routes on the trained scorer's predicted quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.catalog import ConfigError, load_catalog
from app.cli import main
from tests.conftest import small_config
from tests.evaluation.synthetic import TWO_MODEL_PRICES, two_model_rows, write_dataset

HARD = "prove the theorem by induction, please explain"
EASY = "hello, what is the capital of the movie holiday"


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("learned")
    data = write_dataset(folder, "syn", two_model_rows(300), TWO_MODEL_PRICES)
    out = folder / "router.bin"
    args = ["--dim", "4096", "--folds", "0", "--steps", "120", "--learning-rate", "0.1"]
    assert main(["train", str(data), "-o", str(out), *args]) == 0
    return out


def _config(policy: dict[str, Any]) -> dict[str, Any]:
    config = small_config()
    base = {"lambda_cost": 1000, "lambda_latency": 0, "models": ["big", "small"]}
    config["policies"] = {"smart": {**base, **policy}}
    return config


async def _model_for(client: Any, text: str) -> str:
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "smart", "messages": [{"role": "user", "content": text}]},
    )
    assert r.status_code == 200, r.text
    return str(r.headers["x-pareto-model"])


async def test_learned_policy_sends_only_hard_prompts_to_the_strong_model(
    app_client: Any, router_file: Path
) -> None:
    learned = await app_client(_config({"learned_router": str(router_file)}))
    assert await _model_for(learned, HARD) == "big"
    assert await _model_for(learned, EASY) == "small"
    # The same policy on catalog quality (big 60, small 30) pays for big every time.
    plain = await app_client(_config({}))
    assert await _model_for(plain, EASY) == "big"


async def test_route_explain_shows_the_learned_quality(app_client: Any, router_file: Path) -> None:
    client = await app_client(_config({"learned_router": str(router_file)}))
    r = await client.post(
        "/v1/route", json={"model": "smart", "messages": [{"role": "user", "content": EASY}]}
    )
    assert r.status_code == 200, r.text
    rows = {c["deployment"]: c for c in r.json()["candidates"]}
    assert rows["small@sim"]["quality"] > 80  # learned: easy rows are solved by both
    assert rows["small@sim"]["status"] == "chosen"


def test_bad_router_files_are_config_errors(
    tmp_path: Path, router_file: Path, write_config: Any
) -> None:
    missing = write_config(_config({"learned_router": "nope.bin"}))
    with pytest.raises(ConfigError, match=r"policies.smart.learned_router: .*nope.bin"):
        load_catalog(missing)
    config = _config({"learned_router": str(router_file)})
    config["policies"]["smart"].pop("models")
    config["models"]["other"] = {"quality": 50, "context_window": 8000}
    config["deployments"]["other@sim"] = config["deployments"]["big@sim"]
    wider = write_config(config)
    with pytest.raises(ConfigError, match="also routes to other"):
        load_catalog(wider)
