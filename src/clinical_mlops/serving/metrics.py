"""Prometheus metrics of the service: requests, latency, predictions, flags, oversight, status.

The HTTP front end also registers the monitoring gauges (drift, outcome-linked,
fairness and workflow quantities and open alerts; :mod:`clinical_mlops.monitoring.gauges`)
on :attr:`ServiceMetrics.registry`, collected from the workspace at scrape time. Each app
has its own collector registry, so two apps in one process (tests) do not share counters.
Route labels are the route templates, never raw paths, so a patient id in a URL can never
become a label value.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5, 2.0)


class ServiceMetrics:
    """The service's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clinical_mlops_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "clinical_mlops_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "clinical_mlops_predictions", "Prediction results", ["status", "mode"], registry=r
        )
        self.flags = Counter(
            "clinical_mlops_prediction_flags", "Flags raised", ["flag"], registry=r
        )
        self.escalations = Counter(
            "clinical_mlops_escalations", "Cases routed to human review", registry=r
        )
        self.refusals = Counter("clinical_mlops_refusals", "Refused requests", ["code"], registry=r)
        self.overrides = Counter(
            "clinical_mlops_overrides", "Clinician feedback", ["action", "reason"], registry=r
        )
        self.outcomes = Counter("clinical_mlops_outcomes", "Outcomes linked", registry=r)
        self.model_status = Gauge(
            "clinical_mlops_model_status",
            "1 for the status each release is in",
            ["release", "status"],
            registry=r,
        )
        # labelled children by label values: ``labels()`` validates and locks on every call
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request on ``route`` (a route template) and its latency."""
        self._child(self.latency, route).observe(seconds)
        self._child(self.requests, route, method, str(status)).inc()

    def observe_results(self, results: list) -> None:  # list[PredictionResult]
        for res in results:
            self._child(self.predictions, res.status, res.mode or "none").inc()
            for flag in res.flags:
                self.flags.labels(flag).inc()
            if res.escalated:
                self.escalations.inc()
            if res.refusal:
                self.refusals.labels(res.refusal["code"]).inc()

    def set_status(self, releases: list[dict]) -> None:
        self.model_status.clear()
        for rel in releases:
            self.model_status.labels(rel["version"], rel["status"]).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
