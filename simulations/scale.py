"""How the controller's load grows with the number of rollouts (``rollwise sim scale``).

One world and the real controller process. For each count N, N InferenceServices are
under analysis at once (each canary held at its first step by a long ``minDuration``),
each with light traffic. Over a measuring window at each N, read from the controller's
``/metrics``, Prometheus' own ``/metrics``, ``/proc`` and the API server's audit log:

* Prometheus queries per analysis pass and per second: the provider batches one query per
  PromQL template for every rollout due in a pass, so neither may grow with N (a pass
  serves the rollouts whose interval is up; with steps that started at different
  seconds those are spread over the ticks, so queries per second are bounded by the
  templates times the tick rate, whatever N is). Instant queries only: the range query
  for stable's history (``analysis.history``) comes once per template in a pass where a
  rollout's evidence starts, so it grows with how many rollouts start, not with N;
* rollouts judged per second (every analysing rollout once per interval: N / 5 s);
* seconds per analysis pass and per reconcile pass, controller CPU seconds per pass;
* the controller's Kubernetes API requests per second, and its LISTs of
  InferenceServices per second (the informer lists once, then watches: none per pass).

I/O: starts servers and a subprocess; everything on loopback, bounded by ``window``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from controller.cli.table import Column, markdown
from simulations.controller_process import ControllerProcess
from simulations.endpoints import Behaviour
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig

NAMESPACE = "models"
POLICY_NAME = "scale"
POLICY = f"""\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: {POLICY_NAME}}}
spec:
  # The canary stays at 10% for the whole measurement: every rollout is analysed at
  # every interval.
  steps: [{{weight: 10}}, {{weight: 100}}]
  stepDefaults: {{minDuration: 1h, minRequests: 100}}
  readyTimeout: 60s
  analysis:
    interval: 5s
    warmup: {{duration: 10s}}
    alpha: 0.05
    checks:
      - {{name: error-rate, kind: ratio, tolerance: 0.5, maxRate: 0.05}}
      - {{name: p99-latency, kind: latency, quantile: 0.99, tolerance: 0.5}}
      - name: prediction-drift
        kind: distribution
        method: jensenShannon
        threshold: 0.1
        reference: {{source: stable}}
  onInconclusive: {{deadline: 2h, action: pause}}
  onMissingData: {{after: 10m, action: pause}}
"""
MODEL = Behaviour(latency_median_ms=40, latency_sigma=0.3, error_rate=0.01,
                  prediction_mean=0.5, prediction_sd=0.1)


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at one instant."""

    at: float
    analysis_passes: float
    analysis_seconds: float
    reconcile_passes: float
    reconcile_seconds: float
    verdicts: float
    prometheus_queries: float
    cpu_seconds: float
    api_requests: int
    api_lists: int = 0            # LISTs of InferenceServices (watches not counted)


@dataclass(frozen=True)
class Row:
    rollouts: int
    seconds: float
    analysis_passes: int
    queries_per_pass: float
    queries_per_second: float
    judged_per_second: float
    analysis_ms_per_pass: float
    reconcile_ms_per_pass: float
    cpu_ms_per_pass: float
    api_requests_per_second: float
    api_lists_per_second: float = 0.0


def _counters(text: str) -> dict[str, float]:
    """Sum every sample of each series name (over its labels)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _prometheus_queries(text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name == "prometheus_http_requests_total"
                    and s.labels.get("handler", "") == "/api/v1/query"):
                total += s.value
    return total


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _controller_requests(audit_log: Path, user: str) -> tuple[int, int]:
    """The controller's completed API requests, and among them its LISTs of
    InferenceServices."""
    count = lists = 0
    with audit_log.open() as f:
        for line in f:
            if user not in line:
                continue
            event = json.loads(line)
            if (event.get("stage") == "ResponseComplete"
                    and event.get("user", {}).get("username") == user):
                count += 1
                lists += (event.get("verb") == "list" and (event.get("objectRef") or {})
                          .get("resource") == "inferenceservices")
    return count, lists


def sample(world: World, controller: ControllerProcess) -> Sample:
    assert controller.process is not None
    ours = _counters(controller.metrics())
    theirs = requests.get(f"{world.prometheus.url}/metrics", timeout=5).text
    cluster = world.cluster
    user = (f"system:serviceaccount:{cluster.controller_namespace}:"
            f"{cluster.controller_service_account}")
    api_requests, api_lists = _controller_requests(world.audit_log, user)
    return Sample(
        at=time.monotonic(),
        analysis_passes=ours.get("rollwise_analysis_duration_seconds_count", 0.0),
        analysis_seconds=ours.get("rollwise_analysis_duration_seconds_sum", 0.0),
        reconcile_passes=ours.get("rollwise_reconcile_duration_seconds_count", 0.0),
        reconcile_seconds=ours.get("rollwise_reconcile_duration_seconds_sum", 0.0),
        verdicts=ours.get("rollwise_analysis_verdicts_total", 0.0),
        prometheus_queries=_prometheus_queries(theirs),
        cpu_seconds=_cpu_seconds(controller.process.pid),
        api_requests=api_requests,
        api_lists=api_lists,
    )


def row(rollouts: int, a: Sample, b: Sample) -> Row:
    passes = b.analysis_passes - a.analysis_passes
    reconciles = b.reconcile_passes - a.reconcile_passes
    seconds = b.at - a.at
    per_pass = (lambda x: x / passes) if passes else (lambda x: float("nan"))
    return Row(
        rollouts=rollouts,
        seconds=seconds,
        analysis_passes=int(passes),
        queries_per_pass=per_pass(b.prometheus_queries - a.prometheus_queries),
        queries_per_second=(b.prometheus_queries - a.prometheus_queries) / seconds,
        judged_per_second=(b.verdicts - a.verdicts) / seconds,
        analysis_ms_per_pass=1000 * per_pass(b.analysis_seconds - a.analysis_seconds),
        reconcile_ms_per_pass=(1000 * (b.reconcile_seconds - a.reconcile_seconds) / reconciles
                               if reconciles else float("nan")),
        cpu_ms_per_pass=1000 * per_pass(b.cpu_seconds - a.cpu_seconds),
        api_requests_per_second=(b.api_requests - a.api_requests) / seconds,
        api_lists_per_second=(b.api_lists - a.api_lists) / seconds,
    )


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _phases(world: World, names: Sequence[str]) -> dict[str, str]:
    from controller.kube.annotations import STATE_ANNOTATION
    from controller.rollout.state import RolloutState

    out = {}
    for name in names:
        raw = (world.get_isvc(NAMESPACE, name)["metadata"].get("annotations") or {}).get(
            STATE_ANNOTATION)
        state = RolloutState.from_json(raw) if raw else None
        out[name] = ("" if state is None else
                     f"{state.phase}:{state.storage_uri}:{state.revision is not None}")
    return out


def add_rollouts(world: World, start: int, stop: int, *, rps: float, seconds: float) -> None:
    """InferenceServices ``svc-<start>`` .. ``svc-<stop - 1>``: adopted with v1, then v2
    deployed and held at its first step, each with ``rps`` of traffic."""
    names = [f"svc-{i}" for i in range(start, stop)]
    for name in names:
        world.create_isvc(NAMESPACE, name, f"s3://models/{name}/v1", policy=POLICY_NAME)
    _wait(lambda: all(p.startswith("Succeeded") for p in _phases(world, names).values()),
          60 + 2 * len(names), "adoption")
    for name in names:
        world.patch_isvc(NAMESPACE, name, {"spec": {"predictor": {"model": {
            "storageUri": f"s3://models/{name}/v2"}}}})
    _wait(lambda: all(p == f"Progressing:s3://models/{n}/v2:True"
                      for n, p in _phases(world, names).items()),
          60 + 2 * len(names), "canaries at their first step")
    for name in names:
        # The split never changes during the measurement: re-reading it every 10 s keeps the
        # harness's own GETs from drowning the controller's requests.
        world.start_traffic(NAMESPACE, name, rps, max_seconds=seconds, concurrency=2,
                            split_refresh_s=10.0)


def measure(counts: Sequence[int], *, window: float, rps: float, workdir: Path,
            progress: Callable[[str], None] = lambda line: None,
            binaries: Binaries | None = None) -> Iterator[Row]:
    """Grow the number of analysing rollouts through ``counts``; one row per count."""
    budget = window * len(counts) + 120 * len(counts) + 60
    policies = workdir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / f"{POLICY_NAME}.yaml").write_text(POLICY)
    # A 5 s scrape (the analysis interval; clusters often scrape every 15-30 s) rather than
    # the tests' 1 s: 2 x N simulated endpoints render their metrics in Python.
    config = WorldConfig(default_behaviour=MODEL, ready_delay=0.5, scrape_interval="5s")
    with World(config, workdir=workdir / "world", binaries=binaries) as world, \
            ControllerProcess(world, policies, workdir / "controller.log") as controller:
        have = 0
        for count in counts:
            progress(f"{count} rollouts: deploying {count - have} more")
            add_rollouts(world, have, count, rps=rps, seconds=budget)
            have = count
            # Warm up: two analysis intervals with every rollout's traffic flowing.
            time.sleep(10.0)
            progress(f"{count} rollouts: measuring for {window:.0f}s")
            first = sample(world, controller)
            time.sleep(window)
            yield row(count, first, sample(world, controller))


# The load table's columns; on a terminal the first ones stay (rollwise sim scale).
TABLE_COLUMNS = tuple(Column(header, priority=priority, align="right") for header, priority in (
    ("analysing rollouts", 9), ("rollouts judged / s", 3), ("analysis passes", 1),
    ("Prometheus queries / pass", 8), ("Prometheus queries / s", 4),
    ("analysis ms / pass", 6), ("reconcile ms / pass", 7), ("controller CPU ms / pass", 2),
    ("Kubernetes API requests / s", 5), ("InferenceService LISTs / s", 0)))


def table_rows(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    """The cells of the load table, one row per measured number of rollouts."""
    return [(str(r.rollouts), f"{r.judged_per_second:.2f}", str(r.analysis_passes),
             f"{r.queries_per_pass:.1f}", f"{r.queries_per_second:.2f}",
             f"{r.analysis_ms_per_pass:.0f}", f"{r.reconcile_ms_per_pass:.0f}",
             f"{r.cpu_ms_per_pass:.0f}", f"{r.api_requests_per_second:.1f}",
             f"{r.api_lists_per_second:.2f}") for r in rows]


def table(rows: Sequence[Row]) -> str:
    """The load table in markdown (simulations/results/scale.md)."""
    return markdown(TABLE_COLUMNS, table_rows(rows))
