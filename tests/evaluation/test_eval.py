"""`pareto eval`: the gateway's routing on every row, deterministic, held-out rows only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.evaluation.evaluate import EvalOptions, evaluate_dataset
from app.evaluation.training import TrainConfig
from app.routing.learned import LearnedScorer
from tests.evaluation.synthetic import (
    THREE_MODEL_PRICES,
    TWO_MODEL_PRICES,
    three_model_rows,
    two_model_rows,
    write_dataset,
)

FAST = TrainConfig(steps=100, learning_rate=0.1)
FAST_ARGS = ["--dim", "4096", "--steps", "100", "--learning-rate", "0.1", "--folds", "3"]


def _options(**kw: object) -> EvalOptions:
    return EvalOptions(folds=3, dim=4096, train=FAST, **kw)  # type: ignore[arg-type]


def test_learned_router_beats_random_on_held_out_rows_and_eval_is_deterministic(
    tmp_path: Path,
) -> None:
    data = write_dataset(tmp_path, "syn", two_model_rows(240), TWO_MODEL_PRICES)
    first = evaluate_dataset(data, _options(seed=5), show_progress=False)
    second = evaluate_dataset(data, _options(seed=5), show_progress=False)
    assert first.doc == second.doc
    routers = first.doc["routers"]
    random_apgr = first.doc["baselines"]["routellm_random"]["apgr"]
    # A perfect ranking reaches 0.8 here (40 % of rows need the strong model).
    assert routers["learned"]["apgr"] > random_apgr + 0.15
    assert routers["learned"]["cpt50"] < 40.0  # hard rows are 40 %: a good router needs ~20 %
    # The content heuristic reads "prove/theorem/integral" as hard math: its floor then
    # excludes the weak model, so it also beats random here.
    assert routers["heuristic"]["apgr"] > random_apgr
    assert first.doc["split"].startswith("all rows, learned router cross-fitted (3-fold")


def test_many_model_curve_and_cli_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_dataset(tmp_path, "tri", three_model_rows(150), THREE_MODEL_PRICES, gz=True)
    out, png = tmp_path / "res.json", tmp_path / "curves.png"
    assert main(["eval", str(data), "-o", str(out), "--plot", str(png), *FAST_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "single-model mix (the bar)" in printed and "learned" in printed
    doc = json.loads(out.read_text())["datasets"][0]
    learned = doc["routers"]["learned"]
    assert learned["area"] > doc["baselines"]["single_model_mix"]["area"]
    assert learned["cost_per_1k_for_100pct_gain"] is not None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_router_file_is_scored_on_its_held_out_rows_only(tmp_path: Path) -> None:
    data = write_dataset(tmp_path, "syn", two_model_rows(300), TWO_MODEL_PRICES)
    router = tmp_path / "router.bin"
    assert main(["train", str(data), "-o", str(router), "--holdout", "0.3", *FAST_ARGS]) == 0
    held_out = LearnedScorer.load(router).meta["report"]["held_out_rows"]
    result = evaluate_dataset(
        data, _options(routers=("learned",), router_file=router), show_progress=False
    )
    assert result.rows == held_out
    assert result.split.startswith("held-out rows of router.bin")
    assert result.doc["routers"]["learned"]["apgr"] > 0.65  # random ≈ 0.5, perfect 0.8


def test_a_router_trained_on_every_row_is_refused(tmp_path: Path, capsys) -> None:
    data = write_dataset(tmp_path, "syn", two_model_rows(60), TWO_MODEL_PRICES)
    router = tmp_path / "router.bin"
    assert main(["train", str(data), "-o", str(router), *FAST_ARGS]) == 0
    assert main(["eval", str(data), "--router", "learned", "--router-file", str(router)]) == 2
    assert "--holdout" in capsys.readouterr().err
