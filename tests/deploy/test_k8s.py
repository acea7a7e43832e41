"""deploy/k8s validated offline: schemas (kubernetes-validate, strict) and how the parts fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.catalog import load_catalog
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
POD_LABELS = {"app.kubernetes.io/name": "pareto-gateway", "app.kubernetes.io/component": "gateway"}


def documents() -> dict[str, dict[str, Any]]:
    """Every resource, keyed by ``Kind/name``."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


DOCS = documents()


@pytest.mark.parametrize(
    "key", [k for k in DOCS if not k.startswith("ServiceMonitor/")], ids=lambda k: k
)
def test_resource_matches_the_kubernetes_schema(key: str) -> None:
    # Bundled schemas: no cluster, no network. Strict: unknown fields are errors too.
    kubernetes_validate.validate(DOCS[key], kubernetes_validate.latest_version(), strict=True)


def test_every_manifest_is_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_deployment_scales_out_with_probes_resources_and_a_draining_shutdown() -> None:
    dep = DOCS["Deployment/pareto-gateway"]
    spec = dep["spec"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"] == POD_LABELS
    assert spec["template"]["metadata"]["labels"] == POD_LABELS
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    args = container["args"]
    assert args[0] == "serve" and int(args[args.index("--workers") + 1]) >= 2
    drain = int(args[args.index("--graceful-timeout") + 1])
    assert "preStop" in container["lifecycle"]
    assert pod["terminationGracePeriodSeconds"] > drain + 5  # preStop sleep + drain fit
    env = {e["name"]: e for e in container["env"]}
    assert env["PARETO_REDIS_URL"]["value"].startswith("redis://pareto-redis:")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()
    # The config comes from the ConfigMap, mounted where PARETO_CONFIG points.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert env["PARETO_CONFIG"]["value"].startswith(mount["mountPath"] + "/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == "pareto-config"


def test_provider_keys_come_from_a_secret_never_from_the_manifest(tmp_path: Path) -> None:
    container = DOCS["Deployment/pareto-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    config = DOCS["ConfigMap/pareto-config"]["data"]
    for name, text in config.items():
        (tmp_path / name).write_text(text)
    catalog_file = Path(env["PARETO_CONFIG"]["value"]).name
    catalog = load_catalog(tmp_path / catalog_file)  # the ConfigMap holds a valid config
    key_vars = {d.api_key_env for d in catalog.deployments if d.api_key_env}
    key_vars |= {
        str(spec.get("api_key_env"))
        for spec in yaml.safe_load(config[catalog_file])["deployments"].values()
        if spec.get("api_key_env")
    }
    assert key_vars
    for var in key_vars:
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "pareto-provider-keys" and ref["key"] == var
        assert "value" not in env[var]


def test_service_hpa_pdb_and_servicemonitor_point_at_the_gateway() -> None:
    service = DOCS["Service/pareto-gateway"]
    assert service["spec"]["selector"] == POD_LABELS
    (port,) = service["spec"]["ports"]
    hpa = DOCS["HorizontalPodAutoscaler/pareto-gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "pareto-gateway",
    }
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    pdb = DOCS["PodDisruptionBudget/pareto-gateway"]["spec"]
    assert pdb["selector"]["matchLabels"] == POD_LABELS
    # ServiceMonitor is a CRD (no bundled schema): checked structurally.
    monitor = DOCS["ServiceMonitor/pareto-gateway"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    assert endpoint["interval"].endswith("s")
