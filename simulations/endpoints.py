"""Simulated KServe model endpoints, one HTTP server per Knative revision (or Standard-mode
ReplicaSet), on 127.0.0.1.

Purpose
-------
Rollwise reads canary metrics from Prometheus. To test it without a cluster, every
revision of an InferenceService is simulated by a small HTTP server that answers
KServe v1 predictions and exposes, on ``GET /metrics``, the series a real revision
would put into Prometheus: the Knative queue-proxy request metrics (in one of two
generations, the *flavour*) and the KServe Python model server's latency histograms,
plus a prediction histogram for drift monitoring.

I/O
---
* ``POST /v1/models/<model>:predict`` with ``{"instances": [...]}`` answers
  ``{"predictions": [...]}`` (one value in [0, 1] per instance), or HTTP 500 with
  ``{"error": ...}`` with probability ``Behaviour.error_rate``.
* ``GET /v1/models`` answers ``{"models": ["<model>"]}`` (KServe v1 list models).
* ``GET /metrics`` answers Prometheus text format 0.0.4 (what the Go exporters of
  queue-proxy serve; a Prometheus server negotiates it too).
* Every request other than ``/metrics`` is counted as queue-proxy traffic, as the real
  queue-proxy counts every non-probe request whatever its path or status.
* Latency is *sampled* (lognormal) and recorded as such; the reply is immediate unless
  ``sleep=True``. Each endpoint owns a seeded RNG, so a run is reproducible.
* ``EndpointFleet`` keeps a Prometheus ``file_sd`` JSON file listing every endpoint.

Metric names, types and labels, and where they come from
--------------------------------------------------------
Flavour ``queue-proxy-legacy`` -- Knative Serving up to 1.18 (OpenCensus). Sources:
knative/serving ``pkg/queue/request_metric.go``, ``pkg/metrics/key.go``,
``pkg/metrics/tags.go``, ``pkg/queue/sharedmain/main.go`` (``setupMetricsExporter``:
component ``revision`` is the Prometheus namespace, port 9091) at tag knative-v1.18.2;
knative/pkg ``metrics/prometheus_exporter.go``, ``metrics/metricskey/constants.go`` and
``metrics/e2e_test.go`` (branch release-1.18: the OpenCensus exporter writes counters
*without* ``_total`` and turns the ``knative_revision`` resource labels into labels).

======================================  =========  =========================================
series                                  type       labels
======================================  =========  =========================================
``revision_request_count``              counter    configuration_name, container_name,
                                                   namespace_name, pod_name, response_code,
                                                   response_code_class, revision_name,
                                                   route_tag, service_name
``revision_request_latencies``          histogram  same labels (+ ``le``), milliseconds
``revision_app_request_count``          counter    as above without route_tag
``revision_app_request_latencies``      histogram  as above without route_tag (+ ``le``), ms
======================================  =========  =========================================

Latency buckets (ms): 5 10 20 40 60 80 100 150 200 250 300 350 400 450 500 600 700 800
900 1000 2000 5000 10000 20000 50000 100000. ``container_name`` is ``queue-proxy``,
``route_tag`` is ``DISABLED`` (no tag-header routing), ``response_code_class`` is e.g.
``5xx``; ``service_name`` = ``configuration_name`` = ``<isvc>-predictor`` (KServe
``constants.PredictorServiceName``). The recorded latency is whole milliseconds, as
queue-proxy records ``float64(latency.Milliseconds())``. The ``request`` pair covers the
whole queue-proxy, the ``app`` pair the user container; here both see the same latency.
Not simulated: ``revision_queue_depth`` and the Go runtime gauges.

Flavour ``queue-proxy-otel`` -- Knative Serving 1.19+ (OpenTelemetry; modelled on
knative-v1.21.0). Sources: knative/serving ``pkg/queue/request_metric.go`` (scope
``knative.dev/serving/pkg/queue``; named ``kn.serving.invocation.duration`` since 1.19.8 /
1.20.1, ``kn.queueproxy.app.duration`` before, and whole seconds only before 1.19.9 /
1.20.2), ``pkg/queue/sharedmain/otel.go`` (resource), ``pkg/queue/sharedmain/handlers.go``
(otelhttp wraps the handler chain), ``pkg/queue/routetag_handler.go`` (``kn.route.tag``),
``pkg/metrics/key.go``; knative/pkg ``observability/metrics/prometheus_enabled.go``
(``UnderscoreEscapingWithSuffixes``); open-telemetry/opentelemetry-go
``exporters/prometheus/exporter.go`` v0.61.0 (``target_info``, ``otel_scope_*`` labels);
opentelemetry-go-contrib ``instrumentation/net/http/otelhttp`` v0.64.0
``internal/semconv/server.go`` and ``util.go`` (attributes, buckets), opentelemetry-go
``semconv/v1.37.0/httpconv/metric.go`` (``http.server.request.duration``).

=============================================  =========  ==================================
series                                         type       labels
=============================================  =========  ==================================
``kn_serving_invocation_duration_seconds``     histogram  http_response_status_code,
                                                          otel_scope_name,
                                                          otel_scope_schema_url,
                                                          otel_scope_version (+ ``le``)
``http_server_request_duration_seconds``       histogram  http_request_method,
                                                          http_response_status_code,
                                                          kn_route_tag,
                                                          network_protocol_name,
                                                          network_protocol_version,
                                                          server_address, url_scheme,
                                                          otel_scope_* (+ ``le``)
``target_info``                                gauge (1)  k8s_container_name,
                                                          k8s_namespace_name, k8s_pod_name,
                                                          kn_configuration_name,
                                                          kn_revision_name, kn_service_name,
                                                          service_instance_id, service_name,
                                                          service_version,
                                                          telemetry_sdk_language,
                                                          telemetry_sdk_name,
                                                          telemetry_sdk_version
=============================================  =========  ==================================

Buckets (s): 0.005 0.01 0.025 0.05 0.075 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10 (both). Revision
and namespace are OpenTelemetry *resource* attributes: they appear only on ``target_info``,
so a query per revision joins on the target, e.g. ``sum by (kn_revision_name)
(rate(kn_serving_invocation_duration_seconds_count[1m]) * on (job, instance)
group_left (kn_revision_name) target_info)``. The empty ``otel_scope_schema_url`` (and
``otel_scope_version`` of the queue scope) are written as the Go exporter writes them;
Prometheus drops empty labels on ingestion. Not simulated: the otelhttp body-size
histograms, ``kn_serving_queue_depth`` and the Go runtime metrics.

Flavour ``otelhttp`` -- a model server in a plain Deployment pod, with no queue-proxy: its
own HTTP handler instrumented by OpenTelemetry's otelhttp (the same semantic conventions
and buckets as the ``http_server_request_duration_seconds`` family above, from the same
sources) and exported by the OpenTelemetry Prometheus exporter.

=============================================  =========  ==================================
series                                         type       labels
=============================================  =========  ==================================
``http_server_request_duration_seconds``       histogram  http_request_method,
                                                          http_response_status_code,
                                                          network_protocol_name,
                                                          network_protocol_version,
                                                          url_scheme, otel_scope_* (+ ``le``)
``target_info``                                gauge (1)  k8s_namespace_name, k8s_pod_name,
                                                          service_name,
                                                          telemetry_sdk_language,
                                                          telemetry_sdk_name,
                                                          telemetry_sdk_version
=============================================  =========  ==================================

``server_address`` is left out: otelhttp takes it from each request's Host header, which
here is the gateway's hostname for the route. The pod's identity comes from the scrape
target's labels (``namespace``, ``pod``, ``pod_template_hash``; simulations.nodes).

KServe Python model server (all flavours) -- kserve/kserve
``python/kserve/kserve/metrics.py`` and ``model.py`` (v0.15.2): histograms
``request_preprocess_seconds``, ``request_predict_seconds``,
``request_postprocess_seconds``, ``request_explain_seconds`` labelled ``model_name``, with
prometheus_client's default buckets (0.005 ... 10, +Inf); prometheus_client also writes a
``<name>_created`` gauge per child. Preprocess and predict are observed on every call
(predict also when it raises), postprocess only on success; explain is registered but
never observed by a predict call, so it exposes no samples.

Custom (not from any upstream project): ``kserve_model_prediction`` histogram by
``model_name`` with buckets 0.0, 0.1, ..., 1.0 -- what a model team would export from its
predictor to monitor prediction drift. Only successful predictions are observed.

In a cluster queue-proxy (:9091) and the model server (:8080) are two scrape targets (or
one with KServe's metric aggregation); a simulated endpoint serves both on one
``/metrics``. File-sd targets carry only ``namespace`` and ``pod`` (as a kubernetes-sd
relabelling would), names that no exposed series uses; Prometheus adds ``job`` and
``instance``.

Payload-logger mode (``EndpointFleet(logger=LoggerAgent(url))``, the world's
``prediction_sink``): the endpoints do not export ``kserve_model_prediction``; instead, as
KServe's agent sidecar does for ``spec.predictor.logger`` (kserve/kserve
``pkg/logger/handler.go``, ``worker.go``), each prediction request is sent to the sink as
a binary-mode CloudEvent of type ``org.kubeflow.serving.inference.request`` and, when it
was answered 200, its response as ``...inference.response`` with the same ``id`` (the
request's ``Ce-Id`` header, else a new UUID); ``source`` is the pod's name, and the
extensions ``inferenceservicename``, ``namespace``, ``component`` (``predictor``) and
``endpoint`` are set as the agent sets them. Events leave through a bounded queue served
by worker threads (the agent's ``WorkQueue`` of 100); what cannot be queued within a
second, or is not accepted, is counted (``LoggerAgent.dropped``, ``.failed``).

KServe Standard mode (flavour ``kserve-standard``, ``STANDARD_FLAVOUR``): no Knative, so
no queue-proxy; a pod exports only the model server's series above (and the custom
prediction histogram), all labelled ``model_name`` alone. The pod is the scrape target:
``namespace`` and ``pod`` come from the target, the pod named after its Deployment and
ReplicaSet, ``<isvc>[-<predictor name>]-predictor-<pod-template-hash>-<suffix>``, so a
query selects a stable or canary by Deployment name, e.g.
``sum(rate(request_predict_seconds_count{namespace="models",
pod=~"iris-v2-predictor-[a-z0-9]+-[a-z0-9]+"}[1m]))``. Errors are not counted by status
code in that server: ``request_postprocess_seconds`` is observed on success only, so
``..._predict_seconds_count - ..._postprocess_seconds_count`` counts failed predictions.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import queue
import random
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, get_args

import requests
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "FLAVOURS",
    "STANDARD_FLAVOUR",
    "Behaviour",
    "EndpointFleet",
    "LoggerAgent",
    "MetricsFlavour",
    "ModelEndpoint",
    "Outcome",
    "RevisionIdentity",
    "render_prometheus_text",
]

MetricsFlavour = Literal["queue-proxy-legacy", "queue-proxy-otel", "otelhttp"]
FLAVOURS: tuple[MetricsFlavour, ...] = get_args(MetricsFlavour)
#: A KServe Standard-mode pod: the model server's metrics only (no queue-proxy).
StandardFlavour = Literal["kserve-standard"]
STANDARD_FLAVOUR: StandardFlavour = "kserve-standard"
PodFlavour = MetricsFlavour | StandardFlavour

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREDICT_PATH = re.compile(r"^/v1/models/(?P<model>[^/]+):predict$")
# Share of a request's latency spent in KServe's preprocess / postprocess hooks; the
# rest is predict. Small, as for a model without custom pre/post-processing.
_PREPROCESS_SHARE = 0.02
_POSTPROCESS_SHARE = 0.01
_IDLE_CONNECTION_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- behaviour


@dataclass(frozen=True)
class Outcome:
    """What one simulated request did: the sampled latency, HTTP status and predictions."""

    latency_s: float
    status: int
    predictions: tuple[float, ...]


@dataclass(frozen=True)
class Behaviour:
    """What a model revision does; plain numbers so it round-trips through JSON/YAML."""

    latency_median_ms: float = 40.0
    latency_sigma: float = 0.35  # sigma of the underlying normal of the lognormal
    error_rate: float = 0.0  # share of requests answered HTTP 500
    prediction_mean: float = 0.5
    prediction_sd: float = 0.1  # predictions are clipped to [0, 1]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
        if self.latency_median_ms <= 0:
            raise ValueError("latency_median_ms must be > 0")
        if self.latency_sigma < 0 or self.prediction_sd < 0:
            raise ValueError("latency_sigma and prediction_sd must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Behaviour:
        """Build from a JSON/YAML mapping; unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown behaviour keys {unknown}; known: {sorted(known)}")
        return cls(**{key: data[key] for key in data})

    def to_mapping(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}

    def sample(self, rng: random.Random, instances: int = 1) -> Outcome:
        """Draw one request's latency, error and one prediction per instance."""
        latency_s = rng.lognormvariate(math.log(self.latency_median_ms), self.latency_sigma)
        latency_s /= 1000.0
        failed = rng.random() < self.error_rate
        predictions = tuple(
            min(1.0, max(0.0, rng.gauss(self.prediction_mean, self.prediction_sd)))
            for _ in range(instances)
        )
        return Outcome(latency_s, 500 if failed else 200, () if failed else predictions)


# --------------------------------------------------------------------------- identity


_POD_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.SafeEncodeString alphabet


@dataclass(frozen=True)
class RevisionIdentity:
    """Names a revision's pod carries; from them every label value is derived."""

    namespace: str
    isvc: str
    revision: str
    model_name: str
    pod_name: str

    @property
    def service(self) -> str:
        """Knative Service (and Configuration) of a KServe predictor: ``<isvc>-predictor``."""
        return f"{self.isvc}-predictor"

    @staticmethod
    def pod_name_for(revision: str, rng: random.Random) -> str:
        """``<revision>-deployment-<replicaset hash>-<pod suffix>``, as Kubernetes names it."""
        rs = "".join(rng.choice(_POD_HASH_ALPHABET) for _ in range(10))
        pod = "".join(rng.choice(_POD_HASH_ALPHABET) for _ in range(5))
        return f"{revision}-deployment-{rs}-{pod}"


# --------------------------------------------------------------------------- flavours


_LabelFn = Callable[[RevisionIdentity, int], dict[str, str]]


def _seconds(latency_s: float) -> float:
    return latency_s


def _whole_milliseconds(latency_s: float) -> float:
    # queue-proxy (OpenCensus) records float64(latency.Milliseconds()): truncated to ms.
    return float(math.floor(latency_s * 1000.0))


@dataclass(frozen=True)
class _Instrument:
    """One queue-proxy series family: name, type, labels per request, unit conversion."""

    name: str
    kind: Literal["counter", "histogram"]
    documentation: str
    labels: _LabelFn
    buckets: tuple[float, ...] = ()
    scale: Callable[[float], float] = _seconds


@dataclass(frozen=True)
class _Flavour:
    """A generation of queue-proxy metrics: its instruments and optional ``target_info``."""

    instruments: tuple[_Instrument, ...]
    target_info: Callable[[RevisionIdentity], dict[str, str]] | None = None


def _legacy_labels(identity: RevisionIdentity, status: int) -> dict[str, str]:
    return {
        "namespace_name": identity.namespace,
        "service_name": identity.service,
        "configuration_name": identity.service,
        "revision_name": identity.revision,
        "pod_name": identity.pod_name,
        "container_name": "queue-proxy",
        "response_code": str(status),
        "response_code_class": f"{status // 100}xx",
    }


def _legacy_labels_with_route_tag(identity: RevisionIdentity, status: int) -> dict[str, str]:
    return {**_legacy_labels(identity, status), "route_tag": "DISABLED"}


_LEGACY_BUCKETS_MS = (
    5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0,
    450.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100000.0,
)  # fmt: skip
_OTEL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _legacy_pair(prefix: str, who: str, labels: _LabelFn) -> tuple[_Instrument, _Instrument]:
    return (
        _Instrument(
            f"revision_{prefix}request_count",
            "counter",
            f"The number of requests that are routed to {who}",
            labels,
        ),
        _Instrument(
            f"revision_{prefix}request_latencies",
            "histogram",
            "The response time in millisecond",
            labels,
            _LEGACY_BUCKETS_MS,
            _whole_milliseconds,
        ),
    )


def _otel_scope(name: str, version: str) -> dict[str, str]:
    return {"otel_scope_name": name, "otel_scope_schema_url": "", "otel_scope_version": version}


def _otel_invocation_labels(identity: RevisionIdentity, status: int) -> dict[str, str]:
    return {
        "http_response_status_code": str(status),
        **_otel_scope("knative.dev/serving/pkg/queue", ""),
    }


def _otel_http_server_labels(identity: RevisionIdentity, status: int) -> dict[str, str]:
    return {
        "http_request_method": "POST",
        "url_scheme": "http",
        # Host of an in-cluster call; no server_port label since the port is 80.
        "server_address": f"{identity.service}.{identity.namespace}.svc.cluster.local",
        "network_protocol_name": "http",
        "network_protocol_version": "1.1",
        "http_response_status_code": str(status),
        "kn_route_tag": "kn:disabled",
        **_otel_scope("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.64.0"),
    }


def _otelhttp_labels(identity: RevisionIdentity, status: int) -> dict[str, str]:
    """otelhttp's attributes for a pod's own server, whose Host varies (no server_address)."""
    labels = _otel_http_server_labels(identity, status)
    del labels["server_address"], labels["kn_route_tag"]
    return labels


def _pod_target_info(identity: RevisionIdentity) -> dict[str, str]:
    return {
        "k8s_namespace_name": identity.namespace,
        "k8s_pod_name": identity.pod_name,
        "service_name": identity.isvc,
        "telemetry_sdk_language": "go",
        "telemetry_sdk_name": "opentelemetry",
        "telemetry_sdk_version": "1.39.0",
    }


def _otel_target_info(identity: RevisionIdentity) -> dict[str, str]:
    return {
        "k8s_container_name": "queue-proxy",
        "k8s_namespace_name": identity.namespace,
        "k8s_pod_name": identity.pod_name,
        "kn_configuration_name": identity.service,
        "kn_revision_name": identity.revision,
        "kn_service_name": identity.service,
        "service_instance_id": identity.pod_name,
        "service_name": identity.service,
        "service_version": "unknown",  # knative.dev/pkg/changeset without VCS build info
        "telemetry_sdk_language": "go",
        "telemetry_sdk_name": "opentelemetry",
        "telemetry_sdk_version": "1.39.0",
    }


_FLAVOURS: dict[PodFlavour, _Flavour] = {
    STANDARD_FLAVOUR: _Flavour(instruments=()),
    "queue-proxy-legacy": _Flavour(
        instruments=(
            *_legacy_pair("", "queue-proxy", _legacy_labels_with_route_tag),
            *_legacy_pair("app_", "user-container", _legacy_labels),
        )
    ),
    "queue-proxy-otel": _Flavour(
        instruments=(
            _Instrument(
                "kn_serving_invocation_duration_seconds",
                "histogram",
                "The duration of task execution",
                _otel_invocation_labels,
                _OTEL_BUCKETS_S,
            ),
            _Instrument(
                "http_server_request_duration_seconds",
                "histogram",
                "Duration of HTTP server requests.",
                _otel_http_server_labels,
                _OTEL_BUCKETS_S,
            ),
        ),
        target_info=_otel_target_info,
    ),
    "otelhttp": _Flavour(
        instruments=(
            _Instrument(
                "http_server_request_duration_seconds",
                "histogram",
                "Duration of HTTP server requests.",
                _otelhttp_labels,
                _OTEL_BUCKETS_S,
            ),
        ),
        target_info=_pod_target_info,
    ),
}


# --------------------------------------------------------------------------- collectors


def _go_float(value: float) -> str:
    """Format like Go's ``strconv.FormatFloat(v, 'g', -1, 64)``: ``le="5"``, not ``"5.0"``."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


_LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _HistogramCell:
    bucket_counts: list[int]  # non-cumulative; last slot is +Inf
    total: float = 0.0
    count: int = 0


@dataclass
class _InstrumentState:
    instrument: _Instrument
    counters: dict[_LabelKey, float] = field(default_factory=dict)
    histograms: dict[_LabelKey, _HistogramCell] = field(default_factory=dict)

    def record(self, labels: _LabelKey, latency_s: float) -> None:
        spec = self.instrument
        if spec.kind == "counter":
            self.counters[labels] = self.counters.get(labels, 0.0) + 1.0
            return
        cell = self.histograms.get(labels)
        if cell is None:
            cell = self.histograms[labels] = _HistogramCell([0] * (len(spec.buckets) + 1))
        value = spec.scale(latency_s)
        cell.bucket_counts[bisect.bisect_left(spec.buckets, value)] += 1
        cell.total += value
        cell.count += 1

    def family(self) -> Metric:
        spec = self.instrument
        metric = Metric(spec.name, spec.documentation, spec.kind)
        for key, value in sorted(self.counters.items()):
            metric.add_sample(spec.name, dict(key), value)
        for key, cell in sorted(self.histograms.items()):
            labels = dict(key)
            cumulative = 0
            for bound, n in zip((*spec.buckets, math.inf), cell.bucket_counts, strict=True):
                cumulative += n
                metric.add_sample(
                    f"{spec.name}_bucket", {**labels, "le": _go_float(bound)}, cumulative
                )
            metric.add_sample(f"{spec.name}_sum", labels, cell.total)
            metric.add_sample(f"{spec.name}_count", labels, cell.count)
        return metric


class _QueueProxyCollector(Collector):
    """Queue-proxy request metrics of one revision, shaped as the Go exporters write them.

    prometheus_client's own Counter would be exposed as ``..._total``; the OpenCensus
    exporter writes ``revision_app_request_count``, hence a custom collector.
    """

    def __init__(self, flavour: _Flavour, identity: RevisionIdentity) -> None:
        self._flavour = flavour
        self._identity = identity
        self._states = [_InstrumentState(spec) for spec in flavour.instruments]
        self._lock = threading.Lock()

    def record(self, latency_s: float, status: int) -> None:
        keys = [
            tuple(sorted(state.instrument.labels(self._identity, status).items()))
            for state in self._states
        ]
        with self._lock:
            for state, key in zip(self._states, keys, strict=True):
                state.record(key, latency_s)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            families = [state.family() for state in self._states]
        if self._flavour.target_info is not None:
            info = Metric("target_info", "Target metadata", "gauge")
            info.add_sample("target_info", self._flavour.target_info(self._identity), 1.0)
            families.append(info)
        return families


_PREDICTION_BUCKETS = tuple(round(i / 10, 1) for i in range(11))


class _ModelServerMetrics:
    """The KServe Python model server's histograms, plus the custom prediction histogram."""

    def __init__(self, registry: CollectorRegistry, model_name: str, *,
                 predictions: bool = True) -> None:
        def hist(name: str, doc: str, **kwargs: Any) -> Histogram:
            return Histogram(name, doc, ["model_name"], registry=registry, **kwargs)

        self._pre = hist("request_preprocess_seconds", "pre-process request latency")
        self._post = hist("request_postprocess_seconds", "post-process request latency")
        self._predict = hist("request_predict_seconds", "predict request latency")
        hist("request_explain_seconds", "explain request latency")  # never observed here
        self._prediction = hist(
            "kserve_model_prediction",
            "Model output score (custom metric for drift monitoring)",
            buckets=_PREDICTION_BUCKETS,
        ) if predictions else None
        self._model = model_name

    def record(self, outcome: Outcome) -> None:
        pre = outcome.latency_s * _PREPROCESS_SHARE
        post = outcome.latency_s * _POSTPROCESS_SHARE
        self._pre.labels(self._model).observe(pre)
        self._predict.labels(self._model).observe(outcome.latency_s - pre - post)
        if outcome.status < 400:
            self._post.labels(self._model).observe(post)
            if self._prediction is None:
                return
            prediction = self._prediction.labels(self._model)
            for value in outcome.predictions:
                prediction.observe(value)


_TEXT_TYPES = {"unknown": "untyped", "info": "gauge", "stateset": "gauge"}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_prometheus_text(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4, naming counter families as their samples are named.

    ``prometheus_client.generate_latest`` always writes ``# TYPE <name>_total counter``,
    which mismatches Go-style counters such as ``revision_app_request_count``.
    ``_created`` samples go to their own gauge family, as prometheus_client does.
    """
    out: list[str] = []

    def family(name: str, doc: str, typ: str, samples: Iterable[Any]) -> None:
        escaped = doc.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {escaped}\n# TYPE {name} {typ}\n")
        for s in samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(s.labels.items()))
            out.append(f"{s.name}{{{labels}}} " if labels else f"{s.name} ")
            out.append(f"{_go_float(s.value)}\n")

    for metric in registry.collect():
        created = [s for s in metric.samples if s.name == f"{metric.name}_created"]
        samples = [s for s in metric.samples if s.name != f"{metric.name}_created"]
        name = metric.name
        if metric.type == "counter" and any(s.name == f"{name}_total" for s in samples):
            name = f"{name}_total"
        family(name, metric.documentation, _TEXT_TYPES.get(metric.type, metric.type), samples)
        if created:
            family(f"{metric.name}_created", metric.documentation, "gauge", created)
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    """Threaded server that remembers its open connections so ``stop`` can cut keep-alives."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, endpoint: ModelEndpoint) -> None:
        self.endpoint = endpoint
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((endpoint.host, endpoint.port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (or idle out) mid-connection are normal here, not errors."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the traffic generator expects
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    timeout = _IDLE_CONNECTION_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: thousands of requests per second."""

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        if self.path == "/metrics":
            self._reply(200, endpoint.exposition(), TEXT_CONTENT_TYPE)
        elif self.path == "/v1/models":
            self._traffic(200, {"models": [endpoint.model_name]}, time.perf_counter())
        else:
            self._traffic(404, {"error": f"no route for GET {self.path}"}, time.perf_counter())

    def do_POST(self) -> None:
        started = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        endpoint = self.server.endpoint
        match = _PREDICT_PATH.match(self.path)
        if match is None:
            self._traffic(404, {"error": f"no route for POST {self.path}"}, started)
            return
        if match["model"] != endpoint.model_name:
            error = f"Model with name {match['model']} does not exist."
            self._traffic(404, {"error": error}, started)
            return
        try:
            instances = json.loads(body)["instances"]
            if not isinstance(instances, list):
                raise TypeError("instances must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            self._traffic(400, {"error": f"invalid request: {exc}"}, started)
            return
        outcome = endpoint.serve_prediction(len(instances))
        if outcome.status == 200:
            answer = json.dumps({"predictions": list(outcome.predictions)}).encode()
        else:
            answer = json.dumps({"error": "simulated model failure"}).encode()
        self._reply(outcome.status, answer, "application/json")
        if endpoint.logger is not None:
            endpoint.logger.log(endpoint.identity, body, answer, outcome.status,
                                self.headers.get("Content-Type") or "application/json",
                                self.headers.get("Ce-Id"))

    def _traffic(self, status: int, payload: object, started: float) -> None:
        """Answer a request that is not a prediction; queue-proxy still counts it."""
        self.server.endpoint.record_plain_request(time.perf_counter() - started, status)
        self._reply_json(status, payload)

    def _reply_json(self, status: int, payload: object) -> None:
        self._reply(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ModelEndpoint:
    """One revision's model server on ``127.0.0.1:<free port>`` in a daemon thread."""

    def __init__(
        self,
        *,
        namespace: str,
        isvc: str,
        revision: str,
        model_name: str,
        behaviour: Behaviour,
        flavour: PodFlavour = "queue-proxy-legacy",
        seed: int | None = None,
        sleep: bool = False,
        pod_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        logger: LoggerAgent | None = None,
    ) -> None:
        """``logger``: send each prediction to a payload logger's sink (module doc) instead
        of exporting ``kserve_model_prediction``. ``pod_name`` is the real pod's
        (simulations.nodes) or the simulated KServe's Standard-mode pod's when there is
        one (else one is made up, as Kubernetes would name a Knative revision's);
        ``host``/``port`` where to listen (a free port by default): a loopback address,
        and ``port`` 0 for any free one."""
        if flavour not in _FLAVOURS:
            raise ValueError(
                f"unknown metrics flavour {flavour!r}; choose from "
                f"{(*FLAVOURS, STANDARD_FLAVOUR)}"
            )
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"endpoints listen on loopback only, not {host}")
        names = random.Random(f"pod:{namespace}/{revision}:{seed}")
        pod = pod_name or RevisionIdentity.pod_name_for(revision, names)
        self.identity = RevisionIdentity(namespace, isvc, revision, model_name, pod)
        self.host, self.port = host, port
        self.flavour: PodFlavour = flavour
        self.sleep = sleep
        self._behaviour = behaviour
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self._queue_proxy = _QueueProxyCollector(_FLAVOURS[flavour], self.identity)
        self.registry.register(self._queue_proxy)
        self.logger = logger
        self._model_server = _ModelServerMetrics(self.registry, model_name,
                                                 predictions=logger is None)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def model_name(self) -> str:
        return self.identity.model_name

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Swap what the revision does mid-run, e.g. to inject a latency regression."""
        self._behaviour = behaviour

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, the scrape target."""
        if self._server is None:
            raise RuntimeError("endpoint not started")
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        if self._stopped:
            raise RuntimeError("a stopped endpoint cannot be restarted; create a new one")
        if self._server is not None:
            return
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"endpoint-{self.identity.namespace}-{self.identity.revision}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections; safe to call twice."""
        self._stopped = True
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> ModelEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Called by the handler threads.

    def serve_prediction(self, instances: int) -> Outcome:
        """Sample, optionally wait, and record a prediction call in every metric."""
        with self._rng_lock:
            outcome = self._behaviour.sample(self._rng, instances)
        if self.sleep:
            time.sleep(outcome.latency_s)
        self._queue_proxy.record(outcome.latency_s, outcome.status)
        self._model_server.record(outcome)
        return outcome

    def record_plain_request(self, latency_s: float, status: int) -> None:
        self._queue_proxy.record(latency_s, status)

    def exposition(self) -> bytes:
        return render_prometheus_text(self.registry)


# --------------------------------------------------------------------------- logger


_REQUEST_EVENT = "org.kubeflow.serving.inference.request"
_RESPONSE_EVENT = "org.kubeflow.serving.inference.response"


class LoggerAgent:
    """KServe's agent sidecar for ``spec.predictor.logger`` (mode ``all``): request and
    response CloudEvents (binary mode) to ``url`` from a bounded queue (module doc)."""

    def __init__(self, url: str, *, workers: int = 4, queue_size: int = 100,
                 component: str = "predictor", endpoint: str = "default",
                 timeout: float = 5.0) -> None:
        self.url, self.component, self.endpoint, self.timeout = url, component, endpoint, timeout
        self._queue: queue.Queue[tuple[dict[str, str], bytes] | None] = queue.Queue(queue_size)
        self.sent = self.failed = self.dropped = 0
        self._count_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"logger-agent-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def log(self, identity: RevisionIdentity, request: bytes, response: bytes, status: int,
            content_type: str, event_id: str | None = None) -> None:
        """One prediction call: its request event, and its response event if it was 200."""
        event_id = event_id or str(uuid.uuid4())
        self._put(self._headers(identity, _REQUEST_EVENT, event_id, content_type), request)
        if status == 200:
            self._put(self._headers(identity, _RESPONSE_EVENT, event_id, content_type),
                      response)

    def _headers(self, identity: RevisionIdentity, kind: str, event_id: str,
                 content_type: str) -> dict[str, str]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"Ce-Specversion": "1.0", "Ce-Id": event_id, "Ce-Source": identity.pod_name,
                "Ce-Type": kind, "Ce-Time": now, "Ce-Recordedtime": now,
                "Ce-Inferenceservicename": identity.isvc, "Ce-Namespace": identity.namespace,
                "Ce-Component": self.component, "Ce-Endpoint": self.endpoint,
                "Ce-Metadata": "{}", "Content-Type": content_type}

    def _put(self, headers: dict[str, str], body: bytes) -> None:
        try:
            self._queue.put((headers, body), timeout=1.0)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1

    def _work(self) -> None:
        session = requests.Session()
        while (item := self._queue.get()) is not None:
            headers, body = item
            try:
                ok = session.post(self.url, data=body, headers=headers,
                                  timeout=self.timeout).status_code == 200
            except requests.RequestException:
                ok = False
            with self._count_lock:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
        session.close()

    def stop(self) -> None:
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
        for thread in self._threads:
            thread.join(timeout=5.0)


# --------------------------------------------------------------------------- fleet


def _derived_seed(seed: int, namespace: str, revision: str) -> int:
    """Per-endpoint seed that depends on its name, not on the order endpoints are added."""
    digest = hashlib.sha256(f"{seed}/{namespace}/{revision}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class EndpointFleet:
    """Every simulated revision of the world, mirrored into a Prometheus file_sd file."""

    def __init__(
        self,
        sd_file: Path,
        *,
        flavour: MetricsFlavour = "queue-proxy-legacy",
        seed: int = 0,
        logger: LoggerAgent | None = None,
    ) -> None:
        """``logger``: every endpoint logs its predictions to that sink (module doc)."""
        self.sd_file = Path(sd_file)
        self.logger = logger
        self._static_targets: dict[str, dict[str, str]] = {}
        self.flavour: MetricsFlavour = flavour
        self.seed = seed
        self._endpoints: dict[tuple[str, str], ModelEndpoint] = {}
        self._target_labels: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self._write_sd()

    def add(self, namespace: str, isvc: str, revision: str, behaviour: Behaviour, *,
            model_name: str | None = None, pod_name: str | None = None,
            host: str = "127.0.0.1", port: int = 0, flavour: PodFlavour | None = None,
            target_labels: Mapping[str, str] | None = None) -> ModelEndpoint:
        """Start an endpoint for a revision (model name = isvc name, KServe's default).
        A KServe Standard-mode pod set passes ``flavour=STANDARD_FLAVOUR`` and its pod name.

        For a real pod (simulations.nodes) ``revision`` is the pod's name and the keywords
        say its model name, where it listens, its metrics flavour (else the fleet's) and
        the extra labels of its scrape target. Raises ``OSError`` when the address is taken,
        with nothing registered."""
        key = (namespace, revision)
        with self._lock:
            if key in self._endpoints:
                raise ValueError(f"revision {namespace}/{revision} already has an endpoint")
            endpoint = ModelEndpoint(
                namespace=namespace,
                isvc=isvc,
                revision=revision,
                model_name=model_name or isvc,
                behaviour=behaviour,
                flavour=flavour or self.flavour,
                seed=_derived_seed(self.seed, namespace, revision),
                pod_name=pod_name,
                host=host,
                port=port,
                logger=self.logger,
            )
            endpoint.start()
            self._endpoints[key] = endpoint
            self._target_labels[key] = dict(target_labels or {})
            self._write_sd()
        return endpoint

    def add_target(self, address: str, labels: Mapping[str, str] | None = None) -> None:
        """Another scrape target in the same file (the prediction sink)."""
        with self._lock:
            self._static_targets[address] = dict(labels or {})
            self._write_sd()

    def remove(self, namespace: str, isvc: str, revision: str) -> None:
        with self._lock:
            endpoint = self._endpoints.get((namespace, revision))
            if endpoint is None or endpoint.identity.isvc != isvc:
                raise KeyError(f"no endpoint for {namespace}/{isvc}/{revision}")
            del self._endpoints[(namespace, revision)]
            self._target_labels.pop((namespace, revision), None)
            self._write_sd()
        endpoint.stop()

    def get(self, namespace: str, revision: str) -> ModelEndpoint | None:
        with self._lock:
            return self._endpoints.get((namespace, revision))

    def __iter__(self) -> Iterator[ModelEndpoint]:
        with self._lock:
            return iter(list(self._endpoints.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._endpoints)

    def close(self) -> None:
        """Stop every endpoint (and the logger) and leave an empty target list behind."""
        with self._lock:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            self._target_labels.clear()
            self._static_targets.clear()
            self._write_sd()
        for endpoint in endpoints:
            endpoint.stop()
        if self.logger is not None:
            self.logger.stop()

    def __enter__(self) -> EndpointFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_sd(self) -> None:
        """Replace the file atomically so Prometheus never reads a half-written list."""
        groups = [
            {
                "targets": [endpoint.address],
                "labels": {
                    "namespace": endpoint.identity.namespace,
                    "pod": endpoint.identity.pod_name,
                    **self._target_labels.get(key, {}),
                },
            }
            for key, endpoint in sorted(self._endpoints.items())
        ] + [{"targets": [address], "labels": labels}
             for address, labels in sorted(self._static_targets.items())]
        self.sd_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.sd_file.name}.", dir=self.sd_file.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(groups, handle, indent=2)
            os.replace(tmp, self.sd_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
