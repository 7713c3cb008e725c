"""PromQL for each provider preset, and the batched query that serves every rollout.

Pure: strings in, strings out. A *template* either is a selector (no ``${window}``),
which is wrapped as ``sum by (<revision label>[, le]) (increase(<selector>[<window>]))``,
or a whole expression using ``${window}`` that keeps the revision (and ``le``) labels.

Batching: all rollouts that need the same template are answered by ONE query per tick:
each rollout's expression (its namespace, its two revisions, its own window) is tagged
with ``label_replace(..., "rollwise_group", "<i>", "", "")`` and the tagged parts are
joined with ``or``. The tag keeps parts from colliding (the same revision name in two
namespaces) and tells which rollout each sample belongs to. Each part also asks for the
age of the newest sample and the counter resets in the last interval (tagged
``rollwise_q``), so stale data and resets are told apart from healthy zeros in the
same request.

Metric names and labels: Knative queue-proxy up to 1.18 (``revision_app_request_*``,
``namespace_name``/``revision_name``; ``pkg/queue/request_metric.go``), Knative 1.19+
OpenTelemetry (``kn_serving_invocation_duration_seconds``; revision and namespace are
resource attributes on ``target_info``, joined on job/instance), the KServe Python model
server (``request_predict_seconds`` by ``model_name``; the revision comes from the pod
name ``<revision>-deployment-...`` that Prometheus' Kubernetes discovery puts in ``pod``),
the same server in KServe Standard mode (``kserve-standard``: pods
``<deployment>-<hash>-<suffix>``, errors as predictions without a postprocess),
Istio (``istio_requests_total``, ``destination_workload`` = ``<revision>-deployment``),
and pods of plain Deployments (``deployment-pods``: otelhttp's
``http_server_request_duration_seconds`` by the ``pod_template_hash`` target label).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Literal

from controller.policy.model import DistributionCheck, LatencyCheck, RatioCheck

Series = Literal["total", "errors", "latency", "histogram"]

_POD_REVISION = '(.*)-deployment-.*'
_WORKLOAD_REVISION = '(.*)-deployment'


def _pod_relabel(inner: str, source: str = "pod", pattern: str = _POD_REVISION) -> str:
    # "$$1" is string.Template for a literal "$1", the capture group label_replace inserts.
    return f'label_replace({inner}, "revision", "$$1", "{source}", "{pattern}")'


@dataclass(frozen=True)
class Template:
    """One PromQL template and the label that names the revision in its result."""

    text: str
    revision_label: str
    histogram: bool
    unit_scale: float = 1.0       # multiply bucket bounds by this to get seconds

    @property
    def is_selector(self) -> bool:
        return "window" not in string.Template(self.text).get_identifiers()


def _knative_legacy(kind: Series) -> Template | None:
    sel = 'namespace_name="${namespace}", revision_name=~"${revision}"'
    return {
        "total": Template(f"revision_app_request_count{{{sel}}}", "revision_name", False),
        "errors": Template(f'revision_app_request_count{{{sel}, response_code_class="5xx"}}',
                           "revision_name", False),
        "latency": Template(f"revision_app_request_latencies_bucket{{{sel}}}", "revision_name",
                            True, 0.001),
    }.get(kind)


def _knative_otel(kind: Series) -> Template | None:
    info = 'target_info{k8s_namespace_name="${namespace}", kn_revision_name=~"${revision}"}'

    def joined(series: str, by: str) -> str:
        return (f"sum by ({by}) (increase({series}[${{window}}]) * on (job, instance) "
                f"group_left (kn_revision_name) {info})")

    metric = "kn_serving_invocation_duration_seconds"
    return {
        "total": Template(joined(f"{metric}_count", "kn_revision_name"), "kn_revision_name",
                          False),
        "errors": Template(joined(f'{metric}_count{{http_response_status_code=~"5.."}}',
                                  "kn_revision_name"), "kn_revision_name", False),
        "latency": Template(joined(f"{metric}_bucket", "kn_revision_name, le"),
                            "kn_revision_name", True),
    }.get(kind)


def _pod_histogram(metric: str, pod: str = '(${revision})-deployment-.*',
                   revision: str = _POD_REVISION) -> Template:
    """A model-server histogram per revision, the revision read from the pod's name."""
    inner = (f'sum by (pod, le) (increase({metric}_bucket{{namespace="${{namespace}}", '
             f'pod=~"{pod}"}}[${{window}}]))')
    return Template(f"sum by (revision, le) ({_pod_relabel(inner, 'pod', revision)})",
                    "revision", True)


def _kserve_model_server(kind: Series) -> Template | None:
    return _pod_histogram("request_predict_seconds") if kind == "latency" else None


_STANDARD_POD = '(${revision})-[a-z0-9]+-[a-z0-9]+'
_STANDARD_REVISION = '(.*)-[a-z0-9]+-[a-z0-9]+'


def _kserve_standard(kind: Series) -> Template | None:
    """KServe Standard mode: no queue-proxy, only the model server's histograms on pods
    named ``<deployment>-<pod-template-hash>-<suffix>``; the revision is the Deployment
    (``{isvc}[-{predictor name}]-predictor``). That server counts no status codes: a failed
    prediction is observed by ``request_predict_seconds`` and not by
    ``request_postprocess_seconds`` (success only), so errors are the difference."""
    def per_revision(metric: str) -> str:
        inner = (f'sum by (pod) (increase({metric}{{namespace="${{namespace}}", '
                 f'pod=~"{_STANDARD_POD}"}}[${{window}}]))')
        return f"sum by (revision) ({_pod_relabel(inner, 'pod', _STANDARD_REVISION)})"

    predicted = per_revision("request_predict_seconds_count")
    succeeded = per_revision("request_postprocess_seconds_count")
    return {
        "total": Template(predicted, "revision", False),
        # A revision whose every prediction failed has no postprocess series at all.
        "errors": Template(f"{predicted} - ({succeeded} or {predicted} * 0)", "revision",
                           False),
        "latency": _pod_histogram("request_predict_seconds", _STANDARD_POD,
                                  _STANDARD_REVISION),
    }.get(kind)


def _istio(kind: Series) -> Template | None:
    sel = ('destination_workload_namespace="${namespace}", '
           'destination_workload=~"(${revision})-deployment", reporter="destination"')

    def per_revision(series: str, by: str) -> str:
        inner = f"sum by ({by}) (increase({series}[${{window}}]))"
        return f"sum by (revision{', le' if 'le' in by else ''}) " \
               f"({_pod_relabel(inner, 'destination_workload', _WORKLOAD_REVISION)})"

    return {
        "total": Template(per_revision(f"istio_requests_total{{{sel}}}",
                                       "destination_workload"), "revision", False),
        "errors": Template(per_revision(f'istio_requests_total{{{sel}, response_code=~"5.."}}',
                                        "destination_workload"), "revision", False),
        "latency": Template(per_revision(f"istio_request_duration_milliseconds_bucket{{{sel}}}",
                                         "destination_workload, le"), "revision", True, 0.001),
    }.get(kind)


#: The prediction sink's histogram (``rollwise prediction-sink``, controller/sink): the sink
#: labels each series with the revision it read from the API server (pod -> owner chain),
#: so a drift check on this metric selects revisions directly, in either serving mode.
SINK_METRIC = "rollwise_prediction"


def _sink_histogram(metric: str) -> Template:
    return Template(f'{metric}_bucket{{namespace="${{namespace}}", revision=~"${{revision}}"}}',
                    "revision", True)


def _deployment_pods(kind: Series) -> Template | None:
    """Pods of plain Deployments serving their own HTTP, instrumented by OpenTelemetry's
    otelhttp (``http_server_request_duration_seconds``) and scraped with Kubernetes
    discovery's pod labels, so that each sample carries ``pod_template_hash``: the
    revision is the template hash (``routers/deployment_gateway.py``)."""
    sel = 'namespace="${namespace}", pod_template_hash=~"${revision}"'
    metric = "http_server_request_duration_seconds"
    return {
        "total": Template(f"{metric}_count{{{sel}}}", "pod_template_hash", False),
        "errors": Template(f'{metric}_count{{{sel}, http_response_status_code=~"5.."}}',
                           "pod_template_hash", False),
        "latency": Template(f"{metric}_bucket{{{sel}}}", "pod_template_hash", True),
    }.get(kind)


PRESETS = {
    "knative-queue-proxy": _knative_legacy,
    "knative-otel": _knative_otel,
    "kserve-model-server": _kserve_model_server,
    "kserve-standard": _kserve_standard,
    "istio": _istio,
    "deployment-pods": _deployment_pods,
}


def templates_for(check: RatioCheck | LatencyCheck | DistributionCheck,
                  preset: str) -> dict[Series, Template]:
    """The templates one check needs: total and errors for a ratio, buckets otherwise."""
    if isinstance(check, RatioCheck):
        if check.query is not None:
            return {"total": Template(check.query.total, check.query.revision_label, False),
                    "errors": Template(check.query.errors, check.query.revision_label, False)}
        total, errors = PRESETS[preset]("total"), PRESETS[preset]("errors")
        assert total is not None and errors is not None  # the policy validated the preset
        return {"total": total, "errors": errors}
    if check.query is not None:
        scale = {"seconds": 1.0, "milliseconds": 0.001, "none": 1.0}[check.query.unit]
        return {"histogram": Template(check.query.buckets, check.query.revision_label, True,
                                      scale)}
    if isinstance(check, LatencyCheck):
        latency = PRESETS[preset]("latency")
        assert latency is not None
        return {"histogram": latency}
    if check.metric == SINK_METRIC:     # already per revision, whatever the serving mode
        return {"histogram": _sink_histogram(check.metric)}
    if preset == "deployment-pods":     # the custom histogram, by template hash
        return {"histogram": Template(
            f'{check.metric}_bucket{{namespace="${{namespace}}", '
            f'pod_template_hash=~"${{revision}}"}}', "pod_template_hash", True)}
    if preset == "kserve-standard":     # the custom histogram, on Standard-mode pods
        return {"histogram": _pod_histogram(check.metric, _STANDARD_POD, _STANDARD_REVISION)}
    return {"histogram": _pod_histogram(check.metric)}


# --- batching ------------------------------------------------------------------------

_SAFE_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class UnsafeLabelValue(ValueError):
    """A namespace or revision name that is not a Kubernetes name: never put in PromQL."""


def check_label_value(value: str) -> str:
    """Kubernetes names are DNS subdomains; anything else could inject PromQL."""
    if not _SAFE_LABEL_VALUE.match(value):
        raise UnsafeLabelValue(f"{value!r} is not a Kubernetes name; refusing to query it")
    return value


@dataclass(frozen=True)
class Part:
    """One rollout's share of a batched query."""

    group: str
    namespace: str
    service: str
    revisions: tuple[str, ...]
    window_seconds: int
    interval_seconds: int


def _regex_literal(value: str) -> str:
    r"""A Kubernetes name as a literal inside a PromQL regex string: only ``.`` is special
    among [a-z0-9.-], and PromQL strings need the regex backslash doubled (re.escape's
    ``\-`` is not a valid PromQL string escape)."""
    return check_label_value(value).replace(".", "\\\\.")


def _substitute(template: Template, part: Part, window: str) -> str:
    regex = "|".join(_regex_literal(r) for r in part.revisions)
    return string.Template(template.text).substitute(
        namespace=check_label_value(part.namespace), service=check_label_value(part.service),
        revision=f"({regex})" if len(part.revisions) > 1 else regex, window=window)


def _tag(expr: str, group: str, q: str) -> str:
    return (f'label_replace(label_replace({expr}, "rollwise_group", "{group}", "", ""), '
            f'"rollwise_q", "{q}", "", "")')


def part_expression(template: Template, part: Part) -> str:
    """The tagged value, freshness and reset expressions for one rollout."""
    window = f"{max(part.window_seconds, 1)}s"
    by = template.revision_label + (", le" if template.histogram else "")
    if template.is_selector:
        selector = _substitute(template, part, window)
        value = f"sum by ({by}) (increase({selector}[{window}]))"
        age = f"min by ({template.revision_label}) (time() - timestamp({selector}))"
        resets = (f"sum by ({template.revision_label}) "
                  f"(resets({selector}[{max(part.interval_seconds, 1)}s]))")
        return " or ".join((_tag(value, part.group, "value"), _tag(age, part.group, "age"),
                            _tag(resets, part.group, "resets")))
    return _tag(_substitute(template, part, window), part.group, "value")


def batched_query(template: Template, parts: list[Part]) -> str:
    """ONE query answering every rollout that needs ``template``."""
    return " or ".join(part_expression(template, part) for part in parts)


def history_query(template: Template, parts: list[Part]) -> str:
    """ONE range-query expression for every rollout that needs ``template``'s history:
    each part's increase over its ``window_seconds`` (one interval), tagged by group."""
    out = []
    for part in parts:
        window = f"{max(part.window_seconds, 1)}s"
        by = template.revision_label + (", le" if template.histogram else "")
        expr = _substitute(template, part, window)
        if template.is_selector:
            expr = f"sum by ({by}) (increase({expr}[{window}]))"
        out.append(_tag(expr, part.group, "value"))
    return " or ".join(out)
