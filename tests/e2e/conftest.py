"""A real uvicorn gateway in front of a real ``pareto simulate`` upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import POLICIES
from tests.support.procs import Proc, gateway, simulator


def remote_config(sim_url: str) -> dict[str, Any]:
    return {
        "include": [str(POLICIES)],
        "auth": {"enabled": False},
        "models": {
            "small": {"quality": 30, "context_window": 32000, "capabilities": ["json", "tools"]},
            "big": {
                "quality": 60,
                "context_window": 200000,
                "capabilities": ["tools", "vision", "json"],
            },
        },
        "deployments": {
            "small@simhttp": {
                "kind": "openai_compat",
                "base_url": sim_url,
                "api_key_env": "SIM_KEY",
                "price": {"input": 0.1, "output": 0.2},
                "ttft_s": 0.05,
                "decode_tps": 1000,
            },
            "big@simhttp": {
                "kind": "openai_compat",
                "base_url": sim_url,
                "api_key_env": "SIM_KEY",
                "price": {"input": 3, "output": 15},
                "ttft_s": 0.1,
                "decode_tps": 500,
            },
        },
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("e2e")
    with simulator(tmp, "--instant", "--output-tokens", "12") as sim:
        path: Path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(remote_config(sim.url)))
        with gateway(path, tmp, env={"SIM_KEY": "sim-test-key-0000"}) as gw:
            yield gw
