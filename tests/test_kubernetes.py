"""deploy/kubernetes/: every manifest valid against the Kubernetes schemas (offline, with
kubernetes-validate), the PrometheusRule's rules checked by promtool, the generated files equal
to what their sources give, and the pieces agreeing with each other and with the exporter."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from exporter.config_file import DSN_VARIABLES, ENVIRONMENT

from .support.tools import require

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# Kinds whose schemas ship with Kubernetes; the Prometheus Operator's are checked below.
CORE = {"Deployment", "Service", "Secret", "ConfigMap"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind() -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in MANIFESTS:
        for document in documents(path):
            found.setdefault(document["kind"], []).append(document)
    return found


def generator():
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_manifests_are_what_their_sources_give():
    module = generator()
    for name, build in module.FILES.items():
        assert (K8S / name).read_text() == build(), f"{name} is stale: run python deploy/kubernetes/generate.py"


@pytest.mark.parametrize("version", ["1.37.0", "1.30.0"])
def test_core_manifests_validate_against_the_kubernetes_schemas(version):
    checked = 0
    for path in MANIFESTS:
        for document in documents(path):
            if document["kind"] in CORE:
                kubernetes_validate.validate(document, version, strict=True)  # raises on any problem
                checked += 1
    assert checked == 3 + len(list((REPO / "grafana" / "dashboards").glob("*.json")))


def test_a_broken_manifest_is_caught():
    deployment = by_kind()["Deployment"][0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = ["http-metrics"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37.0", strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS if p.name != "secret.example.yaml")


def test_the_prometheus_rule_holds_every_alert_rule_and_promtool_accepts_it(tmp_path):
    (rule,) = by_kind()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    sources = [
        g
        for p in sorted((REPO / "prometheus" / "rules").glob("*.rules.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == sources
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [require("promtool", "prometheus"), "check", "rules", str(extracted)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in sources)
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_the_dashboards_config_maps_hold_every_dashboard_for_the_grafana_sidecar():
    maps = by_kind()["ConfigMap"]
    files = {p.name: p.read_text() for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    held = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        held.update(config_map["data"])
    assert held == files


def test_the_pieces_agree():
    kinds = by_kind()
    (deployment,) = kinds["Deployment"]
    (service,) = kinds["Service"]
    (monitor,) = kinds["ServiceMonitor"]
    (secret,) = kinds["Secret"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    # The Deployment's selector, the Service's and the ServiceMonitor's all find these pods.
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # The port the image's command listens on.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f'"--listen", "0.0.0.0:{port["containerPort"]}"' in dockerfile
    # Probes on the exporter's own endpoints.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    # Non-root (the image's user), read-only root filesystem, nothing extra.
    user = re.search(r"^USER (\d+)", dockerfile, re.M).group(1)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    # Only variables the exporter reads; the database from the Secret.
    names = {e["name"] for e in container["env"]}
    assert names <= set(DSN_VARIABLES) | set(ENVIRONMENT), names
    (database,) = [e for e in container["env"] if e["name"] in DSN_VARIABLES]
    reference = database["valueFrom"]["secretKeyRef"]
    assert reference["name"] == secret["metadata"]["name"]
    assert reference["key"] in secret["stringData"]
