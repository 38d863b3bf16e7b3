"""k8s/: every overlay renders with kustomize and validates strictly against the
Kubernetes schema, and the manifests agree with the code (probe paths, port,
settings, metric names)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from api import metrics
from api.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ["gpu", "cpu"]
#: Custom resources of the Prometheus operator: kubernetes-validate has only the
#: built-in Kubernetes schemas, so these are checked structurally in
#: test_k8s_monitoring.py instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")}


def _render(overlay: str) -> list[dict[str, Any]]:
    path = str(ROOT / "k8s" / "overlays" / overlay)
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", path]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", path]
    else:
        pytest.skip("neither kustomize nor kubectl is installed (.ci/run installs kubectl)")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _kind(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind
                and name in (None, d["metadata"]["name"]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    import kubernetes_validate

    docs = _render(overlay)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "Secret",
                                         "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                         "NetworkPolicy", "Ingress"}
    assert {(d["apiVersion"], d["kind"]) for d in docs} >= CRD_KINDS
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # no schema in kubernetes-validate; see test_k8s_monitoring.py
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_agree_with_the_code(overlay: str) -> None:
    from api.main import app

    docs = _render(overlay)
    deploy = _kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    routes = {getattr(r, "path", None) for r in app.routes}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in routes, probe
    port = container["ports"][0]["containerPort"]
    config = _kind(docs, "ConfigMap", "gpu-pricer-settings")["data"]
    assert int(config["GPU_PRICER_PORT"]) == port
    for key in config:
        assert key.startswith("GPU_PRICER_")
        assert key.removeprefix("GPU_PRICER_").lower() in ServiceSettings.model_fields, key
    sec = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sec["readOnlyRootFilesystem"] is True and sec["capabilities"]["drop"] == ["ALL"]
    exported = {d.name for m in metrics.REGISTRY_METRICS for d in m.describe()}
    hpa = _kind(docs, "HorizontalPodAutoscaler")
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods":
            assert metric["pods"]["metric"]["name"] in exported
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == 1) if overlay == "gpu" else gpus is None


def _mib(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB ("2Gi", "1536Mi", "2G", "2147483648")."""
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2,
             "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}
    for suffix in sorted(units, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * units[suffix]
    return float(quantity) / 2**20


def _cores(quantity: str) -> float:
    return float(quantity.removesuffix("m")) / 1000 if quantity.endswith("m") else float(quantity)


def _service_bench() -> dict[str, Any]:
    """The newest full `python -m bench.service` record (files of runs with other
    settings carry a suffix after "-service")."""
    import json

    runs = sorted((ROOT / "bench" / "results").glob("*-service.json"))
    assert runs, "no bench.service record in bench/results"
    data: dict[str, Any] = json.loads(runs[-1].read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_sized_from_the_service_bench(overlay: str) -> None:
    """docs/deploy.md's sizing rule, against the newest bench.service record: the
    memory request holds the service's measured peak (warm-up, the JSON loads,
    a million-row Arrow request), the limit the largest Arrow request the
    settings allow (resting size plus the measured growth, scaled to
    GPU_PRICER_MAX_ARROW_ROWS), the CPU request the most cores it kept busy.
    On the GPU overlay these host-side figures are a floor (the CUDA context
    and pinned buffers come on top; not measured without a GPU)."""
    bench = _service_bench()
    res = bench["resources"]["coalescing-on"]  # the one that took the Arrow requests
    peak = max(bench["resources"][k]["peak_rss_mib"] for k in ("coalescing-on",
                                                                 "coalescing-off"))
    assert bench["config"]["tiny"] is False
    docs = _render(overlay)
    container = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    config = _kind(docs, "ConfigMap", "gpu-pricer-settings")["data"]
    max_rows = int(config.get("GPU_PRICER_MAX_ARROW_ROWS",
                              ServiceSettings.model_fields["max_arrow_rows"].default))
    growth = (res["peak_rss_mib"] - res["rss_ready_mib"]) / bench["resources"]["arrow_rows"]
    assert _mib(requests["memory"]) >= peak
    assert _mib(limits["memory"]) >= res["rss_ready_mib"] + growth * max_rows
    assert _cores(requests["cpu"]) >= res["max_cores"]
