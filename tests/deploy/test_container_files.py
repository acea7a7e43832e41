"""Dockerfile and docker-compose.yml are checked without a Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess

import yaml

from tests.conftest import ROOT


def compose_config(profiles: str) -> dict:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is required (Debian package docker-compose; .ci/run installs it)"
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "COMPOSE_PROFILES": profiles},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def volumes(service: dict) -> dict[str, str]:
    """target -> source of a service's bind mounts (compose v1 prints "src:dst:mode")."""
    out = {}
    for volume in service["volumes"]:
        if isinstance(volume, dict):
            out[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            out[target] = source
    return out


def test_compose_file_is_valid() -> None:
    services = compose_config("none")["services"]
    assert {"gateway", "redis", "upstream", "prometheus", "grafana"} <= set(services)
    # The traffic generator only runs in the demo profile (compose v1's `config` lists every
    # profile's services, so this reads the file itself).
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert raw["traffic"]["profiles"] == ["demo"]
    assert all("profiles" not in s for name, s in raw.items() if name != "traffic")
    env = services["gateway"]["environment"]
    assert env["PARETO_REDIS_URL"].startswith("redis://redis:")


def test_compose_ships_provisioned_prometheus_grafana_and_demo_traffic() -> None:
    services = compose_config("demo")["services"]
    traffic = services["traffic"]
    assert traffic["command"][:3] == ["demo-traffic", "--url", "http://gateway:8080"]
    prometheus = services["prometheus"]
    mounts = volumes(prometheus)
    assert mounts["/etc/prometheus"] == str(ROOT / "deploy" / "prometheus")
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["gateway:8080"]
    grafana = services["grafana"]
    mounts = volumes(grafana)
    assert mounts["/etc/grafana/provisioning"] == str(ROOT / "deploy/grafana/provisioning")
    dashboards = mounts["/var/lib/grafana/dashboards"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / home.rsplit("/", 1)[1]).exists()
    assert dashboards == str(ROOT / "deploy/grafana/dashboards")
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"
    # The repository's .env turns the demo profile on for a plain `docker-compose up`.
    assert "COMPOSE_PROFILES=demo" in (ROOT / ".env").read_text()


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2
    assert "USER pareto" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
