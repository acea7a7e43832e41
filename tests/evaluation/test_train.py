"""`pareto train`: cross-validated, reproducible, and the saved file scores new requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.errors import RouterFileError
from app.routing.learned import LearnedScorer, featurize
from tests.evaluation.synthetic import TWO_MODEL_PRICES, two_model_rows, write_dataset

FAST = ["--dim", "4096", "--steps", "120", "--folds", "3", "--learning-rate", "0.1"]


def _train(tmp_path: Path, out: str, *extra: str) -> dict[str, object]:
    data = write_dataset(tmp_path, "syn", two_model_rows(300), TWO_MODEL_PRICES, gz=True)
    report = tmp_path / f"{out}.json"
    code = main(
        ["train", str(data), "-o", str(tmp_path / out), "--report", str(report), *FAST, *extra]
    )
    assert code == 0
    result: dict[str, object] = json.loads(report.read_text())
    return result


def test_train_learns_who_wins_and_beats_random_on_held_out_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _train(tmp_path, "router.bin")
    printed = capsys.readouterr().out
    assert "APGR" in printed and "out-of-fold" in printed
    block = report["heldout"][0]  # type: ignore[index]
    assert block["learned"]["apgr"] > block["random"]["apgr"] + 0.2
    scorer = LearnedScorer.load(tmp_path / "router.bin")
    hard = scorer.predict([{"role": "user", "content": "prove the theorem by induction"}])
    easy = scorer.predict([{"role": "user", "content": "hello what is the capital"}])
    assert hard["big"] - hard["small"] > easy["big"] - easy["small"] + 0.3


def test_training_is_reproducible_for_a_seed(tmp_path: Path) -> None:
    a = _train(tmp_path, "a.bin", "--seed", "3")
    b = _train(tmp_path, "b.bin", "--seed", "3")
    assert a == b
    sa, sb = LearnedScorer.load(tmp_path / "a.bin"), LearnedScorer.load(tmp_path / "b.bin")
    f = featurize([{"role": "user", "content": "prove a lemma"}], sa.dim)
    assert (sa.predict_features(f) == sb.predict_features(f)).all()


def test_calibration_hits_the_target_strong_share(tmp_path: Path) -> None:
    report = _train(tmp_path, "cal.bin", "--target-strong-share", "0.4")
    cal = report["calibration"][0]  # type: ignore[index]
    assert cal["strong_share"] == pytest.approx(0.4, abs=0.02)
    assert cal["lambda_cost"] > 0


def test_holdout_rows_are_never_trained_on(tmp_path: Path) -> None:
    report = _train(tmp_path, "h.bin", "--holdout", "0.25")
    assert 40 < report["held_out_rows"] < 110  # type: ignore[operator]
    assert report["rows"] + report["held_out_rows"] == 300  # type: ignore[operator]
    meta = LearnedScorer.load(tmp_path / "h.bin").meta
    assert meta["holdout"] == {"fraction": 0.25, "seed": 0}


def test_a_file_that_is_not_a_router_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "router.bin"
    bad.write_bytes(b"not a router")
    with pytest.raises(RouterFileError, match="pareto train"):
        LearnedScorer.load(bad)
