"""k8s/components/monitoring (and the gpu overlay's extra rule): the
ServiceMonitor, the alert rules and the Grafana dashboard agree with the
service's code: every metric they query is one the service exposes, the
ServiceMonitor reaches the Service's port and /metrics, thresholds follow the
settings in the ConfigMap.  ServiceMonitor and PrometheusRule are custom
resources that kubernetes-validate has no schema for, so their structure is
checked here against the fields of the Prometheus operator's CRDs that these
manifests use."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api import metrics
from gpu_pricer import dispatch
from tests.test_k8s import OVERLAYS, ROOT, _kind, _render

#: Names as they appear in PromQL: a series name of this service.
METRIC_NAME = re.compile(r"\bgpu_pricer_[a-z_]+")
#: `name{matchers}`: the label names a selector uses.
SELECTOR = re.compile(r"\b(gpu_pricer_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
#: Labels the Prometheus operator puts on every target of a ServiceMonitor.
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
#: The Prometheus operator's duration format (its CRDs' pattern).
DURATION = (r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
            r"(([0-9]+)ms)?)$")
SEVERITIES = {"critical", "warning", "info"}
DOCS = ROOT / "docs" / "deploy.md"


# --- what the service exposes -----------------------------------------------------------

EXPOSE = textwrap.dedent("""
    from prometheus_client import Counter, Gauge, Histogram, Info
    from api import metrics
    for m in (*metrics.REGISTRY_METRICS, metrics.BACKEND):
        names = m._labelnames  # no public accessor; a child per metric so it has samples
        child = m.labels(*["x"] * len(names)) if names else m
        if isinstance(m, Counter):
            child.inc()
        elif isinstance(m, Histogram):
            child.observe(1.0)
        elif isinstance(m, Gauge):
            child.set(1.0)
        elif isinstance(m, Info):
            child.info({"backend": "numba", "reason": "test"})
    print(metrics.render()[0].decode())
""")


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a service that has touched every metric once, in the
    multiprocess mode the Deployment runs in (PROMETHEUS_MULTIPROC_DIR is read
    when prometheus_client is imported, hence a process of its own)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prom"))}
    return subprocess.run([sys.executable, "-c", EXPOSE], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def exposed(exposition: str) -> dict[str, set[str]]:
    """Series name -> its label names, as Prometheus stores them."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_deployment_exposes_multiprocess_metrics() -> None:
    """The exposition above is the deployed one only if the pods run in multiprocess mode."""
    for overlay in OVERLAYS:
        container = _kind(_render(overlay), "Deployment")["spec"]["template"]["spec"][
            "containers"][0]
        assert "PROMETHEUS_MULTIPROC_DIR" in {e["name"] for e in container["env"]}


def test_series_names_follow_the_suffix_rules(exposed: dict[str, set[str]]) -> None:
    """Counters are stored as <name>_total, histograms as <name>_bucket, _count and
    _sum, gauges under their own name; nothing else (no _created in multiprocess
    mode, and Info metrics are not exported there at all)."""
    from prometheus_client import Counter, Gauge, Histogram

    expected: set[str] = set()
    for m in metrics.REGISTRY_METRICS:
        for family in m.describe():
            if isinstance(m, Counter):
                expected.add(family.name + "_total")
            elif isinstance(m, Histogram):
                expected |= {family.name + s for s in ("_bucket", "_count", "_sum")}
            elif isinstance(m, Gauge):
                expected.add(family.name)
    assert set(exposed) == expected


# --- the rendered monitoring resources --------------------------------------------------

def _rules(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                yield from group["rules"]


def _alert(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in _rules(docs) if r.get("alert") == name)


def _dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    data = _kind(docs, "ConfigMap", "gpu-pricer-dashboard")["data"]
    (text,) = data.values()
    return dict(json.loads(text))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows, collapsed or not


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _queries(docs: list[dict[str, Any]]) -> list[str]:
    """Every PromQL expression of the rules and the dashboard, and the HPA's metric."""
    exprs = [str(r["expr"]) for r in _rules(docs)]
    exprs += _dashboard_queries(_dashboard(docs))
    hpa = _kind(docs, "HorizontalPodAutoscaler")
    exprs += [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    return exprs


_METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
#: The parts of the operator's CRDs (monitoring.coreos.com/v1) that these manifests
#: use, closed to unknown fields so that a misspelt one fails here rather than be
#: dropped by the API server; extend them when a manifest needs another field.
SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {"type": "object", "additionalProperties": False,
                                 "minProperties": 1,
                                 "properties": {"matchLabels": _LABELS}},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["port", "path"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": DURATION},
                                "scrapeTimeout": {"type": "string", "pattern": DURATION},
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["groups"], "additionalProperties": False,
                "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "rules"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": {"type": "string", "pattern": DURATION},
                        "rules": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["alert", "expr", "for", "labels",
                                                           "annotations"],
                            "additionalProperties": False,
                            "properties": {
                                "alert": {"type": "string",
                                          "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": {"type": "string", "pattern": DURATION},
                                "labels": {**_LABELS, "required": ["severity"],
                                           "properties": {"severity": {"enum": sorted(
                                               SEVERITIES)}}},
                                "annotations": {
                                    **_LABELS, "required": ["summary", "description"],
                                    "properties": {"summary": {"minLength": 10},
                                                   "description": {"minLength": 80}},
                                },
                            },
                        }},
                    },
                }}},
            },
        },
    },
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_are_well_formed(overlay: str) -> None:
    import jsonschema

    docs = _render(overlay)
    crds = [d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"]
    assert {d["kind"] for d in crds} == set(SCHEMAS)
    for doc in crds:
        jsonschema.validate(doc, SCHEMAS[doc["kind"]])
    alerts = [r["alert"] for r in _rules(docs)]
    assert len(alerts) == len(set(alerts)), "alert names repeat"
    assert set(alerts) >= {"GpuPricerHighErrorRate", "GpuPricerHighLatencyP99",
                           "GpuPricerQueueSaturated", "GpuPricerBackendFallback",
                           "GpuPricerNoReadyPods", "GpuPricerMetricsAbsent"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_queries_use_only_exposed_series(overlay: str, exposed: dict[str, set[str]]) -> None:
    """Every gpu_pricer_* name in the alert rules, the dashboard and the HPA is a
    series the service exposes (so gpu_pricer_http_requests, without _total, or the
    bare histogram name would fail), and every label a selector matches on is one
    the series has or the ServiceMonitor adds."""
    queries = _queries(_render(overlay))
    used = {name for q in queries for name in METRIC_NAME.findall(q)}
    assert used, "no gpu_pricer_ metric found in the queries"
    assert used <= set(exposed), sorted(used - set(exposed))
    for q in queries:
        for name, matchers in SELECTOR.findall(q):
            labels = {label for label, _ in MATCHER.findall(matchers)}
            assert labels <= exposed[name] | TARGET_LABELS, (name, labels)


def test_dashboard_shows_every_metric(exposed: dict[str, set[str]]) -> None:
    queries = " ".join(_dashboard_queries(_dashboard(_render("gpu"))))
    for m in metrics.REGISTRY_METRICS:
        family = next(iter(m.describe())).name
        assert any(s.startswith(family) and s in queries for s in exposed), family


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_scrapes_the_service(overlay: str, exposed: dict[str, set[str]]) -> None:
    from api.main import app

    docs = _render(overlay)
    monitor = _kind(docs, "ServiceMonitor")["spec"]
    service = _kind(docs, "Service")
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert "/metrics" in {getattr(r, "path", None) for r in app.routes}
    labels = service["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    # the job label of every query is what jobLabel makes of the Service's labels
    job = labels[monitor["jobLabel"]]
    for q in _queries(docs):
        assert set(re.findall(r'\bjob="([^"]*)"', q)) <= {job}, q
    # a series label that is also a target label is renamed exported_<label> unless
    # honorLabels keeps it (the request metrics' "endpoint")
    if any(names & TARGET_LABELS for names in exposed.values()):
        assert endpoint.get("honorLabels") is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_thresholds_follow_the_settings(overlay: str, exposition: str) -> None:
    docs = _render(overlay)
    config = _kind(docs, "ConfigMap", "gpu-pricer-settings")["data"]
    limit = int(config["GPU_PRICER_MAX_QUEUE_OPTIONS"])
    queue = _alert(docs, "GpuPricerQueueSaturated")
    (fraction, number) = re.findall(r"> (0\.\d+) \* (\d+)\s*$", queue["expr"])[0]
    assert int(number) == limit and 0.5 <= float(fraction) < 1
    assert f"{limit:,}" in queue["annotations"]["description"]
    hpa = _kind(docs, "HorizontalPodAutoscaler")
    target = next(m["pods"]["target"]["averageValue"] for m in hpa["spec"]["metrics"]
                  if m["type"] == "Pods")
    assert int(target) < float(fraction) * limit  # scale out before the alert
    assert f"{int(target):,}" in queue["annotations"]["description"]
    # p99 threshold: a bucket bound (compared exactly) under the default deadline
    latency = _alert(docs, "GpuPricerHighLatencyP99")
    threshold = float(re.findall(r">\s*([0-9.]+)\s*$", latency["expr"])[0])
    bounds = {float(b) for b in re.findall(
        r'gpu_pricer_http_request_duration_seconds_bucket\{[^}]*le="([0-9.e+]+)"', exposition)}
    assert threshold in bounds
    assert threshold < int(config["GPU_PRICER_DEFAULT_DEADLINE_MS"]) / 1000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_alerts_name_the_rendered_objects(overlay: str) -> None:
    docs = _render(overlay)
    deployment = _kind(docs, "Deployment")["metadata"]["name"]
    for q in _queries(docs):
        assert set(re.findall(r'\bdeployment="([^"]*)"', q)) <= {deployment}, q


def test_gpu_overlay_alerts_on_a_cpu_backend() -> None:
    """Only the gpu overlay expects a GPU backend; its list is the library's."""
    rule = _alert(_render("gpu"), "GpuPricerCpuBackendOnGpuNode")
    (backends,) = re.findall(r'backend!~"([^"]*)"', rule["expr"])
    assert set(backends.split("|")) == set(dispatch.GPU)
    assert "GpuPricerCpuBackendOnGpuNode" not in {r.get("alert") for r in _rules(_render("cpu"))}


def test_dashboard_configmap() -> None:
    docs = _render("gpu")
    config = _kind(docs, "ConfigMap", "gpu-pricer-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = config["data"]
    assert key.endswith(".json")
    # kubectl apply keeps a copy in an annotation, and annotations are limited to 256 KiB
    assert len(config["data"][key].encode()) < 256 * 1024 // 2
    dashboard = _dashboard(docs)
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(dashboard["panels"])}) == len(list(_panels(
        dashboard["panels"])))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    builtin = {"__rate_interval", "__interval", "__range"}
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert set(re.findall(r"\$(\w+)", target["expr"])) <= variables | builtin
        assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_configmap_holds_the_file() -> None:
    """The ConfigMap carries the file as it is (no copy to keep in step)."""
    path = ROOT / "k8s" / "components" / "monitoring" / "dashboards" / "gpu-pricer.json"
    config = _kind(_render("cpu"), "ConfigMap", "gpu-pricer-dashboard")
    assert config["data"][path.name] == path.read_text()


def test_every_alert_has_a_runbook_in_the_docs() -> None:
    text = DOCS.read_text()
    for overlay in OVERLAYS:
        for rule in _rules(_render(overlay)):
            assert f"### {rule['alert']}" in text, rule["alert"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_promtool_accepts_the_rules(overlay: str, tmp_path: Path) -> None:
    """PromQL syntax, where promtool is installed (it is not needed otherwise)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    docs = _render(overlay)
    groups = [g for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]]
    dashboard = [{"record": f"dashboard:query{i}", "expr": q.replace("$__rate_interval", "5m")
                  .replace("$namespace", ".*")}
                 for i, q in enumerate(_dashboard_queries(_dashboard(docs)))
                 if not q.startswith("label_values(")]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [*groups,
                                                {"name": "dashboard", "rules": dashboard}]}))
    subprocess.run([promtool, "check", "rules", str(rules)], check=True, capture_output=True)
