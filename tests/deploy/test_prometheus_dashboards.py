"""The shipped Prometheus config, alert rules and Grafana dashboards, against a live gateway.

The real ``prometheus`` binary (Debian's package; .ci/run installs it) scrapes a real
multi-worker gateway on simulated upstreams while ``pareto demo-traffic`` sends traffic (with
a gateway key, plus a few requests refused with 401 and 403); then every PromQL expression of
every dashboard panel and alert rule goes through Prometheus' HTTP API. Each must parse; each
panel must return data; every metric each one names must be one the gateway exposes (a
misspelt metric inside ``… or vector(0)`` would still return data). Missing binaries fail,
never skip.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.auth.config import generate_key, hash_key
from app.demo_traffic import run as demo_traffic
from tests.conftest import ROOT
from tests.support.procs import Proc, free_port, gateway, wait_http

pytestmark = pytest.mark.e2e
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "5s", "$deployment": ".+"}
DEMO_KEY = generate_key()  # the demo traffic's key
PROBE_KEY = generate_key()  # a key allowed one model, then asked for another (403)
METRIC = re.compile(r"\bpareto_[a-z0-9_]+\b")
AUTH_PANEL = "overview/Auth refusals (401/403)"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is required for the telemetry tests: install Debian's 'prometheus' package "
        "(.ci/run does)"
    )
    return path


def test_promtool_accepts_the_config_and_the_rules() -> None:
    promtool = binary("promtool")
    for args in (
        ["check", "config", str(PROM_DIR / "prometheus.yml")],
        ["check", "rules", str(PROM_DIR / "alerts.yml")],
    ):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def panel_queries() -> list[tuple[str, str]]:
    """``(dashboard/panel title, expr with Grafana variables substituted)`` for every target."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["panels"], path
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "prometheus", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                expr = target["expr"]
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                assert "$" not in expr, f"unsubstituted variable in {path.name}: {expr}"
                out.append((f"{path.stem}/{panel['title']}", expr))
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [(rule["alert"], rule["expr"]) for g in rules["groups"] for rule in g["rules"]]


def exposed_metrics(exposition: str) -> set[str]:
    """Every series name a ``/metrics`` page can hold, children created yet or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def fast_demo_config(tmp: Path) -> Path:
    """config/demo.yaml with every simulated deployment 50x faster (same relative speeds),
    and auth on: the demo traffic's key, and one allowed a single model."""
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["include"] = [str(ROOT / "config" / name) for name in config.get("include", [])]
    one_model = next(iter(config["models"]))
    config["auth"] = {
        "keys": {
            "demo": {"hash": hash_key(DEMO_KEY)},
            "probe": {"hash": hash_key(PROBE_KEY), "models": [one_model]},
        }
    }
    for dep in config["deployments"].values():
        sim = dep.setdefault("simulation", {})
        sim.update(ttft_s=dep["ttft_s"] / 50, decode_tps=dep["decode_tps"] * 50, output_tokens=24)
    path = tmp / "demo-fast.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str]]:
    prometheus = binary("prometheus")
    tmp = tmp_path_factory.mktemp("prom")
    with gateway(fast_demo_config(tmp), tmp, workers=2) as gw:
        config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROM_DIR / name) for name in config["rule_files"]]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [gw.url.split("//")[1]]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (tmp / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"{url}/-/ready", proc=proc)
            yield gw, url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def query(url: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = r.json()
    return body


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(item["value"][1])) for item in result)


def test_every_dashboard_and_alert_query_works_on_live_traffic(stack: tuple[Proc, str]) -> None:
    gw, url = stack
    # Traffic starts once Prometheus holds a first sample (the pre-created zero series).
    deadline = time.monotonic() + 20
    while not query(url, "pareto_requests_total or pareto_redis_degraded == 0")["data"]["result"]:
        assert time.monotonic() < deadline, "Prometheus never scraped the gateway"
        time.sleep(0.2)
    time.sleep(1.2)
    stats = asyncio.run(demo_traffic(gw.url, rps=30, requests=64, concurrency=8, api_key=DEMO_KEY))
    assert stats.transport_errors == 0 and stats.by_status.get(200, 0) > 40, stats
    assert set(stats.by_status) > {200}  # some errors too, for the error panels

    # Refusals for the auth panel: two unknown keys (401), one key refused a model (403).
    def models(key: str) -> set[str]:
        data = httpx.get(f"{gw.url}/v1/models", headers=bearer(key)).json()["data"]
        return {m["id"] for m in data if m["pareto"]["kind"] == "model"}

    other = min(models(DEMO_KEY) - models(PROBE_KEY))
    refusals = [
        (generate_key(), "auto", 401),
        (generate_key(), "auto", 401),
        (PROBE_KEY, other, 403),
    ]
    for key, model, status in refusals:
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=bearer(key),
        )
        assert r.status_code == status, r.text

    # Wait until Prometheus has every request, then two more scrapes so rates have points.
    deadline = time.monotonic() + 20
    seen = 0.0
    while time.monotonic() < deadline:
        result = query(url, "sum(pareto_requests_total)")["data"]["result"]
        seen = float(result[0]["value"][1]) if result else 0.0
        if seen >= stats.sent + len(refusals):
            break
        time.sleep(0.3)
    assert seen == stats.sent + len(refusals), f"Prometheus saw {seen} of {stats.sent} requests"
    time.sleep(2.5)

    # Every metric a panel or rule names is one the gateway exposes.
    exposed = exposed_metrics(httpx.get(f"{gw.url}/metrics").text)
    for name, expr in [*panel_queries(), *alert_queries()]:
        unknown = set(METRIC.findall(expr)) - exposed
        assert not unknown, f"{name} names metrics the gateway does not expose: {unknown}"

    problems = []
    for name, expr in panel_queries():
        body = query(url, expr)
        if body.get("status") != "success":
            problems.append(f"{name}: does not run: {body.get('error')} — {expr}")
        elif not finite(body["data"]["result"]):
            problems.append(f"{name}: no data — {expr}")
    for name, expr in alert_queries():
        body = query(url, expr)
        if body.get("status") != "success":
            problems.append(f"alert {name}: does not run: {body.get('error')}")
    assert not problems, "\n".join(problems)

    # The refusals show on the overview's auth panel, by status; cache writes have a series in
    # both dashboards' token panels.
    (auth_panel,) = [expr for name, expr in panel_queries() if name == AUTH_PANEL]
    shown = {
        item["metric"]["status"]: float(item["value"][1])
        for item in query(url, auth_panel)["data"]["result"]
    }
    assert set(shown) == {"401", "403"} and all(v > 0 for v in shown.values()), shown
    for board in ("overview", "deployment"):
        exprs = [expr for name, expr in panel_queries() if name == f"{board}/Tokens per second"]
        assert any("pareto_cache_write_input_tokens_total" in expr for expr in exprs), board

    # The drill-down's variable lists the deployments that served traffic.
    r = httpx.get(
        f"{url}/api/v1/label/deployment/values", params={"match[]": "pareto_requests_total"}
    )
    assert len([d for d in r.json()["data"] if d != "none"]) >= 2
    # Prometheus loaded the shipped rules and evaluates them without errors.
    rules = httpx.get(f"{url}/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {name for name, _ in alert_queries()}
    assert all(r["health"] != "err" for r in rules), rules
