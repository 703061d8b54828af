"""A real Prometheus scrapes the service's /metrics and holds the monitoring gauges it reports."""

from __future__ import annotations

import math
import secrets
import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from clinical_mlops.http.app import create_app
from clinical_mlops.monitoring.gauges import PREFIX
from clinical_mlops.monitoring.runs import run_monitor
from clinical_mlops.serving import Predictor
from clinical_mlops.serving.auth import AuthConfig

PROMETHEUS = "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _monitor_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(PREFIX):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_real_prometheus_scrape_matches_the_service(live: dict[str, Any], tmp_path: Path) -> None:
    assert Path(PROMETHEUS).exists(), (
        "Debian package prometheus is not installed (make test installs it)"
    )
    ws = live["ws"]
    run_monitor(ws, until=datetime.now(UTC) + timedelta(minutes=20))
    auth = AuthConfig.from_secret(secrets.token_hex(32))
    # Prometheus 2.x sends an Authorization header only: a bearer token for a system role.
    token = auth.issue(subject="prometheus", roles=["system"], ttl_seconds=3600)
    app_port, prom_port = _free_port(), _free_port()
    with Predictor.open(ws) as predictor:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(predictor, auth),
                host="127.0.0.1",
                port=app_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="none",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        prom = None
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.05)
            headers = {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"http://127.0.0.1:{app_port}/metrics").status_code == 401
            served = _monitor_samples(
                httpx.get(f"http://127.0.0.1:{app_port}/metrics", headers=headers).text
            )
            assert (
                PREFIX + "psi",
                (("input", "ventilation"), ("release", live["release"])),
            ) in served
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: clinical-mlops\n    metrics_path: /metrics\n"
                f"    authorization:\n      type: Bearer\n      credentials: {token}\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{app_port}']\n",
                encoding="utf-8",
            )
            with (tmp_path / "prometheus.log").open("wb") as log:
                prom = subprocess.Popen(
                    [
                        PROMETHEUS,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 90
            while True:
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
                try:
                    up = _query(prom_port, 'up{job="clinical-mlops"}')
                    got = _query(prom_port, '{__name__=~"clinical_mlops_monitor_.*"}')
                except (httpx.TransportError, httpx.HTTPStatusError):
                    time.sleep(0.5)  # not listening yet, or 503 while its storage starts
                    continue
                if up and up[0]["value"][1] == "1" and got:
                    break
                time.sleep(0.5)
            scraped = {}
            for series in got:
                labels = {
                    k: v
                    for k, v in series["metric"].items()
                    if k not in ("__name__", "job", "instance")
                }
                key = (series["metric"]["__name__"], tuple(sorted(labels.items())))
                scraped[key] = float(series["value"][1])
            assert set(scraped) == set(served)
            for key, value in served.items():
                assert math.isclose(scraped[key], value, rel_tol=0, abs_tol=1e-12), key
            assert (
                scraped[(PREFIX + "psi", (("input", "ventilation"), ("release", live["release"])))]
                > 0.2
            )
            # the review workload: reviews per 100 scored, as the service routed them
            rel = (("release", live["release"]),)
            routed = sum(1 for r in live["results"] if r.escalated)
            assert scraped[(PREFIX + "review_rate", rel)] == pytest.approx(
                100.0 * routed / len(live["results"])
            )
            assert scraped[(PREFIX + "open_cases", rel)] == routed  # no encounter: one each
            assert (PREFIX + "review_budget", rel) in scraped
            open_alerts = sum(
                v
                for (name, labels), v in scraped.items()
                if name == PREFIX + "alerts" and ("status", "open") in labels
            )
            assert open_alerts >= 1
        finally:
            if prom is not None:
                prom.terminate()
                try:
                    prom.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    prom.kill()
                    prom.wait(timeout=10)
            server.should_exit = True
            thread.join(timeout=20)
    shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)
