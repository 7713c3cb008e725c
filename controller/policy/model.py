"""The rollout policy language, ``rollwise.io/v1alpha1`` ``RolloutPolicy``, as pydantic models.

Pure: no I/O (reference histograms given by file are read by ``loader``).
SREs write these in YAML; the controller reads them. Field names in YAML are
camelCase (the aliases below). Every model forbids unknown fields and does not
coerce types, so a typo or a quoted number is an error, never a silent default.
Defaults are the safe choice and are documented in each field's description,
which also ends up in the published JSON Schema.

Semantic checks that span fields raise :class:`FieldIssue`, which carries the
path of the offending field relative to the model, so that the loader can
point at the exact line and column.

Every value is bounded, so that a policy that loads can never make the controller's
arithmetic or its writes fail (issue 14): durations by ``durations`` (30 days, 1 hour
for latencies), every float finite (no NaN, no infinity: a NaN gate threshold passed
every model), every count and list below (``MAX_*``), every string in length. The
bounds are far above any real policy and are named in the error message.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Hashable, Iterable, Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from controller.policy.durations import (
    Duration,
    LatencyDuration,
    PositiveDuration,
    format_duration,
)

API_VERSION = "rollwise.io/v1alpha1"
KIND = "RolloutPolicy"

# Counts: weights are whole percents, so no more than 100 steps; every check costs
# queries and a share of alpha; Prometheus histograms have tens of buckets.
MAX_STEPS = 100
MAX_CHECKS = 20
MAX_BUCKETS = 1000
MAX_REQUESTS = 1_000_000_000       # a billion canary requests: 11 days at 1,000 rps
MAX_BUCKET_COUNT = 1e15            # observations in one reference bucket
MAX_BOUND = 1e15                   # |bucket bound|: far beyond seconds or scores
MAX_PSI = 10.0                     # PSI above 1 is already a population that moved
MIN_ALPHA = 1e-6                   # below, alpha / checks underflows the judge's thresholds
MIN_GUARD = 1e-9                   # an SLO rate below this makes the guard's evidence NaN
MAX_LIST = 100                     # approvers, gate metrics
MAX_TEXT = 1024                    # descriptions
MAX_NAME = 256                     # metric and label names
MAX_QUERY = 4096                   # a PromQL template
MAX_PATH = 4096                    # a reference file (PATH_MAX)


class FieldIssue(ValueError):
    """A validation problem located at ``path`` below the model that raised it."""

    def __init__(self, message: str, *path: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.path: tuple[str | int, ...] = path


class _Model(BaseModel):
    """Base for every policy model: strict types, unknown fields rejected, camelCase in YAML,
    floats finite."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,
    )


def first_duplicate(values: Iterable[Hashable]) -> tuple[int, int] | None:
    """``(i, j)``: item ``i`` repeats item ``j``, the first such pair; None if all unique."""
    seen: dict[Hashable, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            return i, seen[value]
        seen[value] = i
    return None


def _require_unique(values: Sequence[Hashable], what: str) -> None:
    """Raise a FieldIssue at the first repeated item of a list of plain values."""
    duplicate = first_duplicate(values)
    if duplicate is not None:
        i, j = duplicate
        raise FieldIssue(f"duplicate {what} {values[i]!r} (also [{j}])", i)


# --- names and identifiers -------------------------------------------------------------

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=_DNS_LABEL, description="A lowercase DNS label (a-z, 0-9, -).")]

SlackUserId = Annotated[str, Field(pattern=r"^[UW][A-Z0-9]{2,}$", max_length=32)]
SlackUserGroupId = Annotated[str, Field(pattern=r"^S[A-Z0-9]{2,}$", max_length=32)]
SlackChannel = Annotated[
    str,
    Field(
        pattern=r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{2,})$",
        max_length=80,
        description="A channel name like #ml-rollouts or a channel ID like C0123ABCD.",
    ),
]
KubernetesName = Annotated[
    str,
    Field(
        pattern=r"^[^\s\x00-\x1f\x7f]+$",
        max_length=512,
        description="As the API server authenticates it: no whitespace, at most 512 characters.",
    ),
]
Fraction = Annotated[float, Field(gt=0, lt=1)]
GuardRate = Annotated[float, Field(ge=MIN_GUARD, lt=1)]
LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=MAX_NAME,
                                 description="A Prometheus label name.")]


# --- PromQL templates ------------------------------------------------------------------

PLACEHOLDERS = {
    "namespace": "the InferenceService's namespace (a label value)",
    "service": "the InferenceService's name (a label value)",
    "revision": "a regular expression matching the revisions under analysis (an alternation in "
                "parentheses); use it inside a =~ matcher",
    "window": "a PromQL range: the time since the current step started, e.g. 300s",
}


def _check_template(text: str) -> str:
    """A PromQL template uses only known ``${placeholders}`` and matches revisions with ``=~``."""
    if not text.strip():
        raise ValueError("a PromQL template must not be empty")
    template = string.Template(text)
    if not template.is_valid():
        raise ValueError(
            "invalid placeholder in PromQL template: write ${name} "
            f"(one of {', '.join(sorted(PLACEHOLDERS))}) and $$ for a literal $"
        )
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS.keys())
    if unknown:
        raise ValueError(
            f"unknown placeholder ${{{unknown[0]}}} in PromQL template; "
            f"known: {', '.join('${' + p + '}' for p in sorted(PLACEHOLDERS))}"
        )
    if not re.search(r'=~\s*"[^"]*\$(\{revision\}|revision\b)[^"]*"', text):
        raise ValueError(
            'a PromQL template must select revisions with a regex matcher, e.g. '
            'revision_name=~"${revision}", so that one query serves every rollout'
        )
    return text


PromQLTemplate = Annotated[
    str,
    AfterValidator(_check_template),
    Field(
        max_length=MAX_QUERY,
        description=(
            "PromQL for cumulative series (counters or histogram buckets) with placeholders "
            "${namespace}, ${service}, ${revision} (a regex: use it in a =~ matcher) and "
            "${window}. Without ${window} it is a selector that Rollwise wraps in "
            "sum by (<revisionLabel>[, le]) (increase(<selector>[<window>])); with ${window} it "
            "is the whole expression and must keep the revisionLabel (and le) labels."
        )
    ),
]

ProviderPreset = Literal["knative-queue-proxy", "knative-otel", "kserve-model-server",
                         "kserve-standard", "istio", "deployment-pods"]
"""Where the request metrics come from.

``knative-queue-proxy``: Knative Serving up to 1.18 (``revision_app_request_*``);
``knative-otel``: Knative Serving 1.19 and later (``kn_serving_invocation_duration_seconds``);
``kserve-model-server``: the KServe Python model server (``request_predict_seconds``);
``kserve-standard``: that server in KServe Standard mode, per predictor Deployment (errors
are predictions without a postprocess);
``istio``: the Istio sidecar (``istio_requests_total``);
``deployment-pods``: pods of plain Deployments instrumented by OpenTelemetry's otelhttp
(``http_server_request_duration_seconds``), per ``pod_template_hash``.
"""


class RatioQuery(_Model):
    """Custom PromQL for a ratio check: errors / total, both cumulative counters."""

    errors: PromQLTemplate
    total: PromQLTemplate
    revision_label: LabelName = Field(
        "revision_name", description="The label that carries the revision name in both series."
    )


class HistogramQuery(_Model):
    """Custom PromQL for a histogram: the ``_bucket`` series with their ``le`` label."""

    buckets: PromQLTemplate
    revision_label: LabelName = Field(
        "revision_name", description="The label that carries the revision name."
    )
    unit: Literal["seconds", "milliseconds", "none"] = Field(
        "seconds", description="The unit of the bucket bounds (for latency checks)."
    )


# --- analysis checks -------------------------------------------------------------------

Tolerance = Annotated[
    float,
    Field(
        ge=0,
        le=10,
        description=(
            "Relative non-inferiority margin: the canary fails only if it is worse than the "
            "stable revision by more than this share (0.2 = 20% worse). Default 0.2."
        ),
    ),
]


class _CheckBase(_Model):
    name: Name = Field(description="A unique name for this check; it appears in every verdict.")
    tolerance: Tolerance = 0.2
    provider: ProviderPreset | None = Field(
        None, description="Override the analysis provider preset for this check."
    )


class RatioCheck(_CheckBase):
    """Error rate = errors / requests of the canary, against the stable revision's."""

    kind: Literal["ratio"]
    max_rate: GuardRate | None = Field(
        None, description="Absolute SLO guard: the canary's error rate must stay below this "
                          f"(at least {MIN_GUARD:g})."
    )
    query: RatioQuery | None = Field(None, description="Custom PromQL instead of the preset.")


class LatencyCheck(_CheckBase):
    """Latency from a Prometheus histogram: a quantile, or the share above a threshold.

    Give exactly one of ``quantile`` and ``threshold``.
    """

    kind: Literal["latency"]
    quantile: Fraction | None = Field(
        None, description="Compare this quantile, e.g. 0.99 (the tail beyond it)."
    )
    threshold: LatencyDuration | None = Field(
        None, description="Compare the share of requests slower than this, e.g. 500ms."
    )
    max_latency: LatencyDuration | None = Field(
        None, description="Absolute SLO guard for quantile mode: the canary's quantile below this."
    )
    max_share_above: GuardRate | None = Field(
        None,
        description="Absolute SLO guard for threshold mode: share of canary requests above it "
                    f"(at least {MIN_GUARD:g}).",
    )
    query: HistogramQuery | None = Field(None, description="Custom PromQL instead of the preset.")

    @model_validator(mode="after")
    def _one_mode(self) -> LatencyCheck:
        if (self.quantile is None) == (self.threshold is None):
            raise FieldIssue("give exactly one of quantile (e.g. 0.99) or threshold (e.g. 500ms)")
        if self.quantile is not None and self.max_share_above is not None:
            raise FieldIssue("maxShareAbove applies to threshold mode; use maxLatency",
                             "maxShareAbove")
        if self.threshold is not None and self.max_latency is not None:
            raise FieldIssue("maxLatency applies to quantile mode; use maxShareAbove", "maxLatency")
        return self


class Histogram(_Model):
    """A histogram as Prometheus buckets: upper bounds (``le``) and the count in each bucket.

    ``counts`` has one more entry than ``bounds``: the last is the +Inf bucket.
    Counts are per bucket, not cumulative.
    """

    bounds: list[float] = Field(min_length=1, max_length=MAX_BUCKETS,
                                description="Bucket upper bounds, increasing.")
    counts: list[float] = Field(max_length=MAX_BUCKETS + 1,
                                description="Observations per bucket; last is the +Inf bucket.")

    @field_validator("bounds")
    @classmethod
    def _increasing(cls, bounds: list[float]) -> list[float]:
        for i, (low, high) in enumerate(itertools.pairwise(bounds)):
            if not high > low:
                raise FieldIssue(f"bounds must be strictly increasing ({high} after {low})", i + 1)
        for i, bound in enumerate(bounds):
            if not abs(bound) <= MAX_BOUND:
                raise FieldIssue(f"bounds must be finite numbers between -{MAX_BOUND:g} and "
                                 f"{MAX_BOUND:g} (+Inf is implicit), got {bound}", i)
        return bounds

    @field_validator("counts")
    @classmethod
    def _non_negative(cls, counts: list[float]) -> list[float]:
        for i, count in enumerate(counts):
            if not 0 <= count <= MAX_BUCKET_COUNT:
                raise FieldIssue(f"counts must be finite and non-negative, at most "
                                 f"{MAX_BUCKET_COUNT:g}, got {count}", i)
        return counts

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.counts) != len(self.bounds) + 1:
            raise FieldIssue(
                f"counts needs {len(self.bounds) + 1} entries (one per bound plus +Inf), "
                f"got {len(self.counts)}",
                "counts",
            )
        if sum(self.counts) <= 0:
            raise FieldIssue("counts must not all be zero", "counts")
        return self


class Reference(_Model):
    """What a distribution check compares the canary against."""

    source: Literal["stable", "training"] = Field(
        "stable",
        description="stable: the stable revision's live histogram; training: a fixed histogram.",
    )
    histogram: Histogram | None = Field(None, description="The training histogram, inline.")
    file: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH,
        description="A YAML or JSON file with bounds and counts, relative to the policy file "
                    "and inside its directory (no absolute path, no '..'), as the controller "
                    "watches that directory for changes.",
    )

    @field_validator("file")
    @classmethod
    def _inside_policy_directory(cls, file: str | None) -> str | None:
        if file is None:
            return None
        if "\0" in file:
            raise ValueError("a file name must not contain a NUL character")
        parts = file.replace("\\", "/").split("/")
        if file.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", file):
            raise ValueError(f"the reference file must be a relative path inside the policy "
                             f"directory (no absolute path, no '..'), got {file!r}")
        return file

    @model_validator(mode="after")
    def _source_fields(self) -> Reference:
        if self.source == "stable" and (self.histogram is not None or self.file is not None):
            field = "histogram" if self.histogram is not None else "file"
            raise FieldIssue("a stable reference takes no histogram or file; "
                             "set source: training", field)
        if self.source == "training" and (self.histogram is None) == (self.file is None):
            raise FieldIssue("a training reference needs exactly one of histogram or file")
        return self


DEFAULT_DRIFT_THRESHOLDS = {"psi": 0.2, "jensenShannon": 0.1}


class DistributionCheck(_CheckBase):
    """Drift of a prediction or feature histogram (PSI or Jensen-Shannon distance)."""

    kind: Literal["distribution"]
    method: Literal["psi", "jensenShannon"] = Field(
        "psi", description="psi: population stability index; jensenShannon: JS distance (base 2)."
    )
    threshold: float | None = Field(
        None,
        gt=0,
        le=MAX_PSI,
        description="Drift above this fails, once significant. Default: 0.2 for psi (at most "
                    "10), 0.1 for JS (at most 1).",
    )
    metric: str = Field(
        "kserve_model_prediction",
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        max_length=MAX_NAME,
        description="The Prometheus histogram (without _bucket) of predictions or a feature.",
    )
    reference: Reference = Field(default_factory=Reference)
    query: HistogramQuery | None = Field(None, description="Custom PromQL instead of the metric.")

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_DRIFT_THRESHOLDS[
            self.method]

    @model_validator(mode="after")
    def _js_range(self) -> DistributionCheck:
        if self.method == "jensenShannon" and self.threshold is not None and self.threshold > 1:
            raise FieldIssue("the Jensen-Shannon distance is at most 1", "threshold")
        return self


Check = Annotated[RatioCheck | LatencyCheck | DistributionCheck, Field(discriminator="kind")]

# Which check kinds each preset can serve without a custom query.
PRESET_KINDS: dict[str, frozenset[str]] = {
    "knative-queue-proxy": frozenset({"ratio", "latency"}),
    "knative-otel": frozenset({"ratio", "latency"}),
    "kserve-model-server": frozenset({"latency"}),
    "kserve-standard": frozenset({"ratio", "latency"}),
    "istio": frozenset({"ratio", "latency"}),
    "deployment-pods": frozenset({"ratio", "latency"}),
}


class Warmup(_Model):
    """A new revision's pods start cold (JIT, caches, lazy model loading), at the first step
    and again at every step that scales the canary up. Cold latency is not a regression."""

    duration: Duration = Field(
        timedelta(minutes=2),
        description="How long after each step begins its data stay out of the relative "
                    "comparison (and of the dispersion estimate). Default 2m; 0s: none.")
    gross_ratio: float | None = Field(
        5.0, ge=1.5, le=1000,
        description="During warm-up and after it, an error rate more than this many times "
                    "stable's rolls back at once, cold start or not (with each error-rate "
                    "check's maxRate). Default 5; null: no gross test.")


class Analysis(_Model):
    """How the canary is judged against the stable revision."""

    interval: PositiveDuration = Field(
        timedelta(minutes=1),
        description="The unit of evidence: per-interval variation of the traffic is measured "
                    "and allowed for interval by interval. The controller looks more often "
                    "(every tick) without spending alpha. Default 1m.")
    warmup: Warmup = Field(default_factory=Warmup)
    history: Duration = Field(
        timedelta(minutes=30),
        description="How much of the stable revision's recent traffic (before the rollout, "
                    "from Prometheus) tells how much its rates move from interval to "
                    "interval, so that the evidence allows for it from the first interval. "
                    "Default 30m; 0s: learn it from the rollout's own intervals only.")
    alpha: float = Field(
        0.05,
        ge=MIN_ALPHA,
        le=0.5,
        description=(
            "False-rollback budget for the whole rollout: the chance that a canary that is no "
            "worse than the stable revision gets rolled back, across all checks and all looks."
        ),
    )
    provider: ProviderPreset = Field(
        "knative-queue-proxy", description="Where request metrics come from (see the presets)."
    )
    checks: list[Check] = Field(min_length=1, max_length=MAX_CHECKS,
                                description=f"The metric checks; 1 to {MAX_CHECKS}.")
    certify: Literal["beforePromotion", "everyStep", "never"] = Field(
        "beforePromotion",
        description=(
            "Which steps need evidence that the canary is within its margins (the relative "
            "tolerance, or else the absolute SLO guards maxRate / maxLatency / maxShareAbove) "
            "before they pass. beforePromotion (default): the step that leads to 100%; "
            "earlier steps pass once there is no evidence of harm. everyStep: every step. "
            "never: no step (Flagger-like speed at low traffic, but a regression too small "
            "to detect with the traffic seen gets promoted). Rare events make relative "
            "evidence slow: set SLO guards to let good canaries through sooner."
        ),
    )

    def certify_step(self, step: int, steps: list[Step]) -> bool:
        """Whether passing ``step`` needs evidence of no regression."""
        if self.certify == "never":
            return False
        if self.certify == "everyStep":
            return True
        return step + 1 < len(steps) and steps[step + 1].weight == 100

    @model_validator(mode="after")
    def _checks_consistent(self) -> Analysis:
        duplicate = first_duplicate(check.name for check in self.checks)
        if duplicate is not None:
            i, j = duplicate
            raise FieldIssue(f"duplicate check name {self.checks[i].name!r} (also checks[{j}])",
                             "checks", i, "name")
        for i, check in enumerate(self.checks):
            preset = check.provider or self.provider
            if check.kind != "distribution" and check.query is None and (
                check.kind not in PRESET_KINDS[preset]
            ):
                raise FieldIssue(
                    f"provider {preset!r} has no {check.kind} metrics; give a custom query",
                    "checks", i, "kind",
                )
        return self


# --- steps, pauses, approvals ------------------------------------------------------------


class Approval(_Model):
    """A human must approve before the rollout moves on (in Slack or with `rollwise approve`)."""

    timeout: PositiveDuration = Field(
        timedelta(hours=24), description="How long to wait for an approval. Default 24h."
    )
    on_timeout: Literal["rollback", "remind"] = Field(
        "rollback",
        description=(
            "rollback: go back to the stable revision when nobody approved in time (default); "
            "remind: stay paused and remind every remindEvery."
        ),
    )
    remind_every: PositiveDuration = Field(
        timedelta(hours=1), description="How often to remind while waiting. Default 1h."
    )


class Pause(_Model):
    """Hold at this step's weight after its analysis passed: for a duration, or for approval."""

    duration: PositiveDuration | None = None
    approval: Approval | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Pause:
        if (self.duration is None) == (self.approval is None):
            raise FieldIssue("a pause needs exactly one of duration or approval")
        return self


class Step(_Model):
    """One canary weight. The rollout moves on when the step's analysis passed, it has run
    for at least ``minDuration`` and the canary served at least ``minRequests``."""

    weight: int = Field(ge=1, le=100, description="Canary traffic in percent (1-100).")
    min_duration: Duration | None = Field(
        None, description="Least time at this weight. Default: stepDefaults.minDuration."
    )
    min_requests: int | None = Field(
        None, ge=0, le=MAX_REQUESTS,
        description="Least canary requests at this weight. Default: stepDefaults."
    )
    pause: Pause | None = Field(
        None,
        description="Hold at this weight after the step passed, before the next weight.",
    )


class StepDefaults(_Model):
    """Defaults for every step that does not set its own."""

    min_duration: Duration = Field(timedelta(minutes=5), description="Default 5m.")
    min_requests: int = Field(200, ge=0, le=MAX_REQUESTS,
                              description="Default 200 canary requests.")


# --- what to do when things go wrong -----------------------------------------------------


class OnFailure(_Model):
    """A failed analysis always rolls back; no rollback waits for a human."""

    action: Literal["rollback"] = "rollback"
    restore_previous_spec: bool = Field(
        False,
        description=(
            "Also restore the last good predictor spec (for teams without GitOps). Default: "
            "leave the spec for the next deploy, as GitOps tools own it."
        ),
    )


class OnInconclusive(_Model):
    """A step that has not passed by its deadline is inconclusive."""

    deadline: PositiveDuration = Field(
        timedelta(minutes=30), description="How long one step may go without a verdict."
    )
    action: Literal["pause", "rollback"] = Field(
        "pause", description="pause: wait for a human (default); rollback: roll back."
    )


class OnMissingData(_Model):
    """Missing, stale or failed metrics never count as healthy: the step holds. After
    ``after`` without data, ``action`` applies."""

    after: PositiveDuration = Field(timedelta(minutes=5), description="Grace period. Default 5m.")
    action: Literal["pause", "rollback"] = Field(
        "pause", description="pause: wait for a human (default); rollback: roll back."
    )


# --- gates and notifications ---------------------------------------------------------------


class MetricThreshold(_Model):
    """A bound on one evaluation metric recorded by the training pipeline."""

    name: str = Field(min_length=1, max_length=MAX_NAME,
                      description="The metric's name as the pipeline logged it.")
    min: float | None = Field(None, description="A finite number.")
    max: float | None = Field(None, description="A finite number.")

    @model_validator(mode="after")
    def _bounds(self) -> MetricThreshold:
        if self.min is None and self.max is None:
            raise FieldIssue("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldIssue(f"min {self.min} is above max {self.max}", "min")
        return self


class PreRolloutGate(_Model):
    """Checks on the model's recorded evaluation before any traffic moves."""

    require_evaluation: bool = Field(
        True, description="Block models without a recorded evaluation. Default true."
    )
    metrics: list[MetricThreshold] = Field(default_factory=list, max_length=MAX_LIST)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: list[MetricThreshold]) -> list[MetricThreshold]:
        duplicate = first_duplicate(metric.name for metric in metrics)
        if duplicate is not None:
            raise FieldIssue(f"duplicate metric {metrics[duplicate[0]].name!r}", duplicate[0],
                             "name")
        return metrics


class Gates(_Model):
    pre_rollout: PreRolloutGate | None = None


NotificationEvent = Literal[
    "started", "stepAdvanced", "paused", "approvalRequested", "approved", "resumed",
    "promoted", "rolledBack", "aborted", "blocked", "analysisDegraded",
]
ALL_EVENTS: tuple[NotificationEvent, ...] = (
    "started", "stepAdvanced", "paused", "approvalRequested", "approved", "resumed",
    "promoted", "rolledBack", "aborted", "blocked", "analysisDegraded",
)


class SlackNotifications(_Model):
    channel: SlackChannel
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS), description="Which events to post. Default all."
    )

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[str]) -> list[str]:
        _require_unique(events, "event")
        return events


class Notifications(_Model):
    slack: SlackNotifications | None = None


class Approvers(_Model):
    """Who may approve a paused step and promote.

    When any of the four lists is set, ``rollwise approve`` and ``rollwise promote`` are
    accepted only from the Kubernetes users and groups listed (as the API server
    authenticates the writer of the command), and Slack approvals only from the Slack
    users and user groups listed. When all four are empty, anyone Kubernetes RBAC lets
    write the command may approve, and Slack offers no approval buttons.
    """

    slack_users: list[SlackUserId] = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Slack user IDs (U..., W...) whose Approve click counts.")
    slack_user_groups: list[SlackUserGroupId] = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Slack user group IDs (S...) whose members' Approve click counts.")
    kubernetes_users: list[KubernetesName] = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Kubernetes usernames as the API server authenticates them, e.g. "
                    "alice@example.com or system:serviceaccount:ci:deployer, who may "
                    "`rollwise approve` and `rollwise promote`.")
    kubernetes_groups: list[KubernetesName] = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Kubernetes groups (e.g. sre) whose members may `rollwise approve` and "
                    "`rollwise promote`.")

    @field_validator("slack_users", "slack_user_groups", "kubernetes_users", "kubernetes_groups")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        _require_unique(names, "approver")
        return names

    @property
    def restricted(self) -> bool:
        """Whether any approver list is set (then only the listed may approve)."""
        return bool(self.slack_users or self.slack_user_groups or self.kubernetes_users
                    or self.kubernetes_groups)

    def allows_kubernetes(self, username: str, groups: Sequence[str]) -> bool:
        """Whether the authenticated Kubernetes user ``username``, member of ``groups``, may
        approve or promote: anyone while no list is set, else only the listed."""
        if not self.restricted:
            return True
        return username in self.kubernetes_users or any(
            group in self.kubernetes_groups for group in groups)


# --- the policy ------------------------------------------------------------------------


class PolicySpec(_Model):
    steps: list[Step] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="Canary weights in percent, strictly increasing, the last one 100.",
    )
    step_defaults: StepDefaults = Field(default_factory=StepDefaults)
    ready_timeout: PositiveDuration = Field(
        timedelta(minutes=10),
        description="A new revision not ready by then is rolled back. Default 10m.",
    )
    analysis: Analysis
    on_failure: OnFailure = Field(default_factory=OnFailure)
    on_inconclusive: OnInconclusive = Field(default_factory=OnInconclusive)
    on_missing_data: OnMissingData = Field(default_factory=OnMissingData)
    gates: Gates = Field(default_factory=Gates)
    notifications: Notifications = Field(default_factory=Notifications)
    approvers: Approvers = Field(default_factory=Approvers)

    @field_validator("steps")
    @classmethod
    def _steps_climb_to_100(cls, steps: list[Step]) -> list[Step]:
        for i in range(1, len(steps)):
            if steps[i].weight <= steps[i - 1].weight:
                raise FieldIssue(
                    f"weights must be strictly increasing: {steps[i].weight} after "
                    f"{steps[i - 1].weight}",
                    i, "weight",
                )
        last = len(steps) - 1
        if steps[last].weight != 100:
            raise FieldIssue(
                f"the last step must be weight 100 (promotion), got {steps[last].weight}",
                last, "weight",
            )
        final = steps[last]
        for field in ("pause", "min_duration", "min_requests"):
            if getattr(final, field) is not None:
                raise FieldIssue(
                    "the final 100% step is the promotion; it takes no "
                    f"{to_camel(field)}",
                    last, to_camel(field),
                )
        return steps

    @model_validator(mode="after")
    def _warmup_fits(self) -> PolicySpec:
        warmup = self.analysis.warmup.duration
        if warmup >= self.on_inconclusive.deadline:
            raise FieldIssue(
                f"warm-up {format_duration(warmup)} must be shorter than onInconclusive."
                f"deadline {format_duration(self.on_inconclusive.deadline)}: no step could be "
                "judged before its deadline", "analysis", "warmup", "duration")
        return self

    def min_duration(self, index: int) -> timedelta:
        value = self.steps[index].min_duration
        return value if value is not None else self.step_defaults.min_duration

    def min_requests(self, index: int) -> int:
        value = self.steps[index].min_requests
        return value if value is not None else self.step_defaults.min_requests


class PolicyMetadata(_Model):
    name: Name = Field(description="The name InferenceServices refer to in rollwise.io/policy.")
    description: str = Field("", max_length=MAX_TEXT)


class RolloutPolicy(_Model):
    """A rollout policy: how a new model revision earns its traffic."""

    model_config = ConfigDict(title="RolloutPolicy")

    api_version: Literal["rollwise.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["RolloutPolicy"]
    metadata: PolicyMetadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name


def json_schema() -> dict[str, Any]:
    """The JSON Schema editors use (yaml-language-server) to validate policies as SREs type."""
    schema = RolloutPolicy.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://rollwise.io/schemas/v1alpha1/rolloutpolicy.schema.json",
        **schema,
    }
