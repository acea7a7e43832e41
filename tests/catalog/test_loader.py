from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog import ConfigError, load_catalog
from app.cli import main
from tests.conftest import ROOT, small_config


def test_shipped_configs_load() -> None:
    demo = load_catalog(ROOT / "config" / "demo.yaml")
    assert len(demo.deployments) == 11
    assert {"auto", "cheap", "balanced", "best", "fast"} <= set(demo.policies)
    assert demo.snapshot_date
    opus = demo.by_id["claude-opus-4.8@anthropic"]
    assert opus.static_cost_usd(800, 250) == pytest.approx(0.01025)
    assert opus.static_latency_s(250) == pytest.approx(5.93, abs=0.01)


def test_production_catalog_disables_deployments_without_keys() -> None:
    catalog = load_catalog(ROOT / "config" / "catalog.yaml", env={"GROQ_API_KEY": "test-key"})
    assert {d.id for d in catalog.deployments} == {
        "gpt-oss-120b@groq",
        "llama-3.3-70b@groq",
        "llama-3.1-8b@groq",
    }
    assert catalog.disabled["gpt-5.5@openai"] == "environment variable OPENAI_API_KEY is not set"
    groq = catalog.by_id["gpt-oss-120b@groq"]
    assert groq.api_key == "test-key"
    assert "test-key" not in repr(groq)


def test_bad_file_lists_every_problem_with_file_and_path(write_config, tmp_path: Path) -> None:
    config = small_config()
    config["models"]["small"]["quality"] = 140
    config["deployments"]["small@sim"]["price"]["input"] = -1
    config["deployments"]["ghost@sim"] = dict(config["deployments"]["big@sim"])
    config["deployments"]["big@sim"]["surprise"] = 1
    path = write_config(config)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    text = "\n".join(info.value.problems)
    assert f"{path}: models.small.quality:" in text
    assert "deployments.small@sim.price.input:" in text
    assert "deployments.big@sim.surprise: Extra inputs are not permitted" in text


def test_unknown_model_and_missing_base_url(write_config) -> None:
    config = small_config()
    config["deployments"]["ghost@sim"] = dict(config["deployments"]["big@sim"])
    config["deployments"]["big@remote"] = {
        "kind": "openai_compat",
        "price": {"input": 1, "output": 1},
        "ttft_s": 1,
        "decode_tps": 10,
    }
    path = write_config(config)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    text = "\n".join(info.value.problems)
    assert "deployments.ghost@sim: model 'ghost' is not defined under models" in text
    assert "deployments.big@remote: base_url is required for kind openai_compat" in text


def test_not_yaml_and_include_cycle(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(bad)
    a = tmp_path / "a.yaml"
    a.write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_catalog(a)


def test_catalog_check_command(write_config, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "check", str(ROOT / "config" / "demo.yaml")]) == 0
    assert "11 enabled deployments" in capsys.readouterr().out
    config = small_config()
    config["deployments"]["small@sim"]["ttft_s"] = "slow"
    path = write_config(config)
    assert main(["catalog", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "deployments.small@sim.ttft_s" in err and "1 problem(s)" in err


def test_cache_write_prices_default_to_anthropics_multipliers(write_config) -> None:
    def dep(kind: str, **price: float) -> dict[str, object]:
        extra = {"base_url": "https://upstream.test", "api_key_env": "TEST_UPSTREAM_KEY"}
        return {
            "kind": kind,
            **extra,
            "price": {"input": 4, "output": 8, "cached_input": 0.4, **price},
            "ttft_s": 1,
            "decode_tps": 50,
        }

    config = small_config(
        **{
            "big@anthropic": dep("anthropic"),
            "big@priced": dep("anthropic", cache_write=6, cache_write_1h=9),
            "small@openai": dep("openai_compat"),
        }
    )
    catalog = load_catalog(write_config(config), env={"TEST_UPSTREAM_KEY": "test-value"})
    anthropic = catalog.by_id["big@anthropic"]
    assert anthropic.price_cache_write == pytest.approx(5e-6)  # 1.25 x input
    assert anthropic.price_cache_write_1h == pytest.approx(8e-6)  # 2 x input
    priced = catalog.by_id["big@priced"]
    assert (priced.price_cache_write, priced.price_cache_write_1h) == pytest.approx((6e-6, 9e-6))
    openai = catalog.by_id["small@openai"]  # no write surcharge outside Anthropic
    assert openai.price_cache_write == openai.price_cache_write_1h == pytest.approx(4e-6)
    # 100 fresh, 1000 read, 300 written (200 of them to the 1-hour cache), 10 out.
    cost = anthropic.static_cost_usd(
        1400, 10, n_cached=1000, n_cache_write=300, n_cache_write_1h=200
    )
    assert cost == pytest.approx((100 * 4 + 1000 * 0.4 + 100 * 5 + 200 * 8 + 10 * 8) / 1e6)


def test_shipped_anthropic_prices_spell_out_the_cache_write_prices() -> None:
    catalog = load_catalog(ROOT / "config" / "catalog.yaml", env={"ANTHROPIC_API_KEY": "test-key"})
    anthropic = [d for d in catalog.deployments if d.kind == "anthropic"]
    assert len(anthropic) == 3
    for dep in anthropic:
        assert dep.price_cache_write == pytest.approx(1.25 * dep.price_input), dep.id
        assert dep.price_cache_write_1h == pytest.approx(2 * dep.price_input), dep.id
        assert dep.price_cached_input == pytest.approx(0.1 * dep.price_input), dep.id
