"""The Grafana dashboard and Prometheus rules refer only to metrics the product exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from clinical_mlops.monitoring.gauges import _SCALAR_HELP, FAMILIES, PREFIX
from clinical_mlops.serving.metrics import ServiceMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"clinical_mlops_[a-z0-9_]+")


def _known() -> set[str]:
    names = {PREFIX + n for n, _, _ in FAMILIES.values()}
    names |= {PREFIX + k for k in _SCALAR_HELP}
    names |= {PREFIX + "window_end_timestamp_seconds", PREFIX + "alerts"}
    registry: CollectorRegistry = ServiceMetrics().registry
    for family in registry.collect():
        names |= {s.name for s in family.samples} | {family.name}
    for base in list(names):
        names |= {base + "_total", base + "_bucket", base + "_count", base + "_sum"}
    return names


def test_dashboard_queries_only_exposed_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "clinical-mlops-monitoring.json").read_text())
    known = _known()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 25
    used = {m for e in exprs for m in NAME.findall(e)}
    for name in used:
        if name.endswith("_"):  # a regex prefix such as clinical_mlops_monitor_outcomes_.*
            assert any(k.startswith(name) for k in known), name
        else:
            assert name in known, name
    # Every kind of drift has its panels, and the release variable drives them.
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for word in ("Data drift", "Concept drift", "Fairness", "Workflow", "PSI", "AUROC", "Override"):
        assert word in titles
    assert dashboard["templating"]["list"][1]["name"] == "release"


def test_prometheus_rules_are_valid_and_use_exposed_metrics() -> None:
    rules = DEPLOY / "prometheus" / "clinical-mlops-rules.yml"
    out = subprocess.run(
        ["/usr/bin/promtool", "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 4 rules found" in out.stdout
    known = _known()
    assert set(NAME.findall(rules.read_text())) <= known
