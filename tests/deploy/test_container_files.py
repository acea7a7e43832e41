"""Dockerfile and docker-compose.yml are checked without a Docker engine."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.conftest import ROOT


def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is required (Debian package docker-compose; .ci/run installs it)"
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"gateway", "redis", "upstream"} <= set(services)
    env = services["gateway"]["environment"]
    assert env["PARETO_REDIS_URL"].startswith("redis://redis:")


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2
    assert "USER pareto" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
