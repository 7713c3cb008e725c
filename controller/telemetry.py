"""The controller's own Prometheus metrics, served on /metrics.

Names are a contract: the Grafana dashboard and the alert rules in ``deploy/`` use them,
and a test checks that every metric they use is defined here. One registry per
process (no global default registry), so tests can create their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRANSITION_REASONS = ("RolloutStarted", "Progressing", "StepAdvanced", "Paused", "Resumed",
                      "Approved", "Promoting", "Promoted", "RollingBack", "RolledBack", "Aborted",
                      "Blocked", "MetricsMissing", "UnguardedDeploy", "Superseded")
QUALITIES = ("no-data", "stale", "counter-reset", "error")
PHASES = ("Pending", "Blocked", "WaitingReady", "Progressing", "Paused", "Promoting",
          "RollingBack", "Succeeded", "Failed", "Aborted", "Superseded")


@dataclass
class Telemetry:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.rollouts = Gauge("rollwise_rollouts", "Managed InferenceServices by rollout phase.",
                              ["phase"], registry=r)
        self.transitions = Counter("rollwise_transitions_total",
                                   "Rollout transitions, by Kubernetes Event reason.",
                                   ["reason"], registry=r)
        self.decisions = Counter("rollwise_analysis_verdicts_total",
                                 "Analysis verdicts by outcome (pass, fail, continue, "
                                 "missing).", ["outcome"], registry=r)
        self.analysis_seconds = Histogram("rollwise_analysis_duration_seconds",
                                          "Time to query and judge one tick of all rollouts.",
                                          registry=r)
        self.reconcile_seconds = Histogram("rollwise_reconcile_duration_seconds",
                                           "Time for one reconcile pass.", registry=r)
        self.api_errors = Counter("rollwise_kubernetes_api_errors_total",
                                  "Failed Kubernetes API calls, by verb.", ["verb"], registry=r)
        self.conflicts = Counter("rollwise_write_conflicts_total",
                                 "Writes refused with 409 (object changed since read).",
                                 registry=r)
        self.query_errors = Counter("rollwise_metric_query_errors_total",
                                    "Failed or unusable metric queries, by quality.",
                                    ["quality"], registry=r)
        self.policy_problems = Gauge("rollwise_policy_problems",
                                     "Problems in the policy directory (0 when all are valid).",
                                     registry=r)
        self.leader = Gauge("rollwise_leader", "1 while this replica holds the leader lease.",
                            registry=r)
        self.object_errors = Counter("rollwise_object_errors_total",
                                     "Objects that could not be reconciled in a pass, by stage "
                                     "(read, catch-up, reconcile); the others went on.",
                                     ["stage"], registry=r)
        self.objects_failing = Gauge("rollwise_objects_failing",
                                     "Managed objects whose last reconcile failed.", registry=r)
        self.objects_skipped = Gauge("rollwise_objects_quiet",
                                     "Objects the last pass skipped: unchanged since a "
                                     "reconcile that left them with no rollout in flight.",
                                     registry=r)
        self.pass_failures = Counter("rollwise_reconcile_pass_failures_total",
                                     "Reconcile passes that failed as a whole (the objects "
                                     "could not be listed).", registry=r)
        self.http_refused = Counter("rollwise_http_refused_total",
                                    "HTTP requests or connections refused or cut off, by face "
                                    "(health, slack, webhook) and reason (timeout, bad-length, "
                                    "too-many-connections, ...).", ["face", "reason"],
                                    registry=r)
        self.last_tick = Gauge("rollwise_last_reconcile_timestamp_seconds",
                               "When the last reconcile pass finished.", registry=r)
        # Pre-initialised label values, so that alerts on increase() see the first event.
        for phase in PHASES:
            self.rollouts.labels(phase)
        for reason in TRANSITION_REASONS:
            self.transitions.labels(reason)
        for quality in QUALITIES:
            self.query_errors.labels(quality)
        for outcome in ("pass", "fail", "continue", "missing"):
            self.decisions.labels(outcome)
        for stage in ("read", "catch-up", "reconcile"):
            self.object_errors.labels(stage)
