"""Cascade policies in the config: validated with the rest, compiled to runtime tiers."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog import ConfigError, load_catalog
from tests.cascade.conftest import cascade_config
from tests.conftest import ROOT


def with_tiered(**cascade: Any) -> dict[str, Any]:
    config = cascade_config()
    config["policies"]["tiered"]["cascade"].update(cascade)
    return config


def test_shipped_cascade_policy_loads_on_the_demo_config() -> None:
    catalog = load_catalog(ROOT / "config" / "demo.yaml")
    cascade = catalog.policies["cascade"].cascade
    assert cascade is not None
    assert [t.target for t in cascade.tiers] == ["gpt-oss-120b", "gpt-5.5"]
    assert cascade.min_confidence == 0.5 and cascade.streaming == "buffer"
    judged = catalog.policies["cascade-judged"].cascade
    assert judged is not None and judged.judge is not None and judged.judge.target == "llama-3.1-8b"


@pytest.mark.parametrize(
    ("cascade", "message"),
    [
        ({"tiers": [{"model": "mini"}]}, "tiers: List should have at least 2 items"),
        ({"max_tiers": 3}, "max_tiers: 3 is more than the 2 tiers defined"),
        (
            {"tiers": [{"model": "mini"}, {"model": "strong", "timeout_s": 2}]},
            "the last tier has no tier",
        ),
        ({"tiers": [{"model": "mini", "policy": "cheap"}, {"model": "strong"}]}, "exactly one of"),
        ({"tiers": [{"policy": "judged"}, {"model": "strong"}]}, "'judged' is itself a cascade"),
        ({"tiers": [{"policy": "nope"}, {"model": "strong"}]}, "unknown policy 'nope'"),
        ({"judge": {"model": "judge", "prompt": "grade {question}"}}, "{answer} placeholder"),
        ({"checks": {"min_confidence": 1.5}}, "min_confidence"),
        ({"checks": {"refusal_patterns": ["("]}}, "not a valid regex"),
        ({"streaming": "sometimes"}, "streaming"),
    ],
)
def test_invalid_cascades_are_config_errors(write_config, cascade: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog(write_config(with_tiered(**cascade)))
    text = "\n".join(info.value.problems)
    assert "policies.tiered.cascade" in text and message in text


def test_max_tiers_cuts_the_list(write_config) -> None:
    tiers = [{"model": "mini", "timeout_s": 1}, {"model": "judge"}, {"model": "strong"}]
    catalog = load_catalog(write_config(with_tiered(tiers=tiers, max_tiers=2)))
    cascade = catalog.policies["tiered"].cascade
    assert cascade is not None and [t.target for t in cascade.tiers] == ["mini", "judge"]


def test_cascade_naming_a_model_this_catalog_lacks_is_disabled_not_fatal(write_config) -> None:
    catalog = load_catalog(
        write_config(with_tiered(tiers=[{"model": "ghost"}, {"model": "strong"}]))
    )
    assert "tiered" not in catalog.policies
    assert "'ghost'" in catalog.disabled["policy tiered"]
