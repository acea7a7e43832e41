"""Dataset reader: .jsonl and .jsonl.gz, the README's cost rule, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import DatasetError
from app.evaluation.baselines import arrays, baselines, oracle_choice
from app.evaluation.dataset import load_dataset
from tests.evaluation.synthetic import TWO_MODEL_PRICES, two_model_rows, write_dataset


def test_jsonl_and_gzip_read_the_same(tmp_path: Path) -> None:
    rows = two_model_rows(30)
    plain = load_dataset(write_dataset(tmp_path, "syn-a", rows, TWO_MODEL_PRICES))
    packed = load_dataset(write_dataset(tmp_path, "syn-b", rows, TWO_MODEL_PRICES, gz=True))
    assert plain.rows == packed.rows
    assert plain.models == ("big", "small")
    assert plain.name == "syn-a"


def test_cost_follows_the_readme_rule(tmp_path: Path) -> None:
    row = {
        "id": "r1",
        "messages": [{"role": "system", "content": "abc"}, {"role": "user", "content": "defgh"}],
        "scores": {"big": 1.0, "small": 0.0},
        "output_tokens": {"big": 100, "small": 7},
        "tags": {"source": "t"},
    }
    ds = load_dataset(write_dataset(tmp_path, "one", [row], TWO_MODEL_PRICES))
    r = ds.rows[0]
    assert r.input_tokens == 2  # ceil(8 / 4)
    assert ds.cost(r, 0) == pytest.approx((2 * 10.0 + 100 * 30.0) / 1e6)
    assert ds.cost(r, 1) == pytest.approx((2 * 0.5 + 7 * 0.5) / 1e6)


def test_oracle_takes_the_cheapest_model_with_the_row_maximum(tmp_path: Path) -> None:
    ds = load_dataset(write_dataset(tmp_path, "syn", two_model_rows(200), TWO_MODEL_PRICES))
    a = arrays(ds)
    choice = oracle_choice(a)
    both_right = (a.quality[:, 0] == 1) & (a.quality[:, 1] == 1)
    assert (choice[both_right] == 1).all()  # the cheap one
    b = baselines(ds, a)
    assert b.two_model is not None and b.strong_weak == ("big", "small")
    assert b.mix.area == pytest.approx(0.5)


def test_missing_price_is_named(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, "syn", two_model_rows(3), {"big": TWO_MODEL_PRICES["big"]})
    with pytest.raises(DatasetError, match="no price for small"):
        load_dataset(path)


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, "syn", two_model_rows(2), TWO_MODEL_PRICES)
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DatasetError, match=r"syn.jsonl:3"):
        load_dataset(path)


def test_rows_must_share_the_model_set(tmp_path: Path) -> None:
    rows = two_model_rows(2)
    rows[1]["scores"] = {"big": 1.0}
    path = tmp_path / "syn.jsonl"
    (tmp_path / "syn-models.json").write_text(json.dumps(TWO_MODEL_PRICES))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="row 2"):
        load_dataset(path)
