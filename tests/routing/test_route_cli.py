"""``pareto route``: the worked example as a table, and a clear error when nothing fits."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from tests.conftest import ROOT

DEMO = str(ROOT / "config" / "demo.yaml")


def test_route_prints_the_worked_example(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["route", "Tell me about the history of Rome.", "--policy", "balanced"]
    code = main([*args, "--max-tokens", "250", "--input-tokens", "800", "--config", DEMO])
    assert code == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if "@" in line.split(" ")[0]}
    assert "0.01025" in rows["claude-opus-4.8@anthropic"]
    assert "5.93" in rows["claude-opus-4.8@anthropic"]
    assert "0.00027" in rows["gpt-oss-120b@groq"] and "0.80" in rows["gpt-oss-120b@groq"]
    assert "dominated (by gpt-oss-120b@groq" in rows["llama-3.3-70b@groq"]
    assert "excluded:quality_floor" in rows["llama-3.1-8b@groq"]
    assert "policy: balanced" in out and "plan: " in out


def test_route_json_and_no_feasible(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "hello", "--json", "--config", DEMO]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["policy"]["name"] == "auto" and body["plan"]
    code = main(["route", "hello", "--input-tokens", "5000000", "--config", DEMO])
    assert code == 1
    err = capsys.readouterr().err
    assert "no_feasible_deployment" in err and "context window" in err
