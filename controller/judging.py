"""When rollouts are judged, and where: the due requests of a pass, and the runner that
judges them without ever holding up the pass.

A slow Prometheus used to freeze the controller: the pass queried and judged every due
rollout before it reconciled anything, so a 12 s delay on queries stopped every object
write (deploy guards and rollbacks included) for 12 s. Now the pass hands the due
requests to a ``JudgeRunner`` and goes on. ``BackgroundJudge`` (the daemon's) judges on
its own worker thread, one batch at a time, and the next pass applies what finished;
``InlineJudge`` (unit tests, benchmarks) judges at once. A judgement applies only to the
step it was computed for: if the rollout moved on meanwhile (a rollback, a command, a
new model), it is dropped. A query's own deadline is the provider's
(``controller.providers.prometheus``): a slow answer is a query error, that is missing
data, never a healthy one.

I/O only through the ``Analyzer`` it is given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from controller.policy.model import RolloutPolicy
from controller.rollout.machine import Judgement
from controller.rollout.state import RolloutState

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AnalysisRequest:
    """What the analyzer needs to judge one rollout's current step."""

    key: str
    namespace: str
    service: str
    canary_revision: str
    baseline_revision: str
    step_started_at: datetime
    policy: RolloutPolicy
    evidence: Mapping[str, Any]     # what the state kept (controller.analysis.looks)
    min_requests: int
    certify: bool = True      # demand evidence of no regression (the step before promotion)
    rollout_id: str = ""      # the rollout and step it was asked for: a judgement applies
    step: int = 0             # only while the rollout is still there
    rollout_started_at: datetime | None = None

    def still_current(self, state: RolloutState | None) -> bool:
        """Whether a judgement for this request may be acted on with ``state``."""
        return (state is not None and state.phase.analysing and state.id == self.rollout_id
                and state.step == self.step
                and (state.step_started_at or state.phase_since) == self.step_started_at)


class Analyzer(Protocol):
    def judge(self, requests: Sequence[AnalysisRequest], now: datetime) -> Mapping[str, Judgement]:
        """One judgement per request key; batched so that load does not grow per rollout."""


def request_for(key: str, namespace: str, name: str, state: RolloutState,
                policy: RolloutPolicy) -> AnalysisRequest | None:
    """The request that judges ``state``'s current step, or None when there is nothing to
    judge (not analysing, or the revisions are not known yet)."""
    if not state.phase.analysing or state.revision is None or state.baseline_revision is None:
        return None
    spec = policy.spec
    return AnalysisRequest(
        key=key, namespace=namespace, service=name, canary_revision=state.revision,
        baseline_revision=state.baseline_revision,
        step_started_at=state.step_started_at or state.phase_since, policy=policy,
        evidence=state.evidence, min_requests=spec.min_requests(state.step),
        certify=spec.analysis.certify_step(state.step, spec.steps), rollout_id=state.id,
        step=state.step, rollout_started_at=state.started_at)


Finished = list[tuple[AnalysisRequest, Judgement]]
OnBatch = Callable[[float, Finished], None]   # (seconds, results): for the metrics


def judge_batch(analyzer: Analyzer, requests: Sequence[AnalysisRequest],
                now: datetime) -> Finished:
    """Judge ``requests``; whatever goes wrong, every request gets a judgement, and one that
    could not be computed is missing data, never healthy data."""
    try:
        judgements = dict(analyzer.judge(requests, now))
    except Exception as err:
        log.error("analysis failed", error=f"{type(err).__name__}: {err}")
        judgements = {r.key: Judgement("continue", f"analysis failed: {err}", missing=True)
                      for r in requests}
    return [(r, judgements.get(r.key) or Judgement(
        "continue", "the analyzer returned nothing for this rollout", missing=True))
        for r in requests]


class JudgeRunner(Protocol):
    def submit(self, requests: Sequence[AnalysisRequest], now: datetime) -> bool:
        """Start judging ``requests``; False when a batch is still running (try later)."""

    def collect(self) -> Finished:
        """The judgements finished since the last call (each returned once)."""

    def close(self) -> None:
        """Stop; a batch still running is abandoned."""


class InlineJudge:
    """Judges in the caller's thread: ``collect`` right after ``submit`` has the results."""

    def __init__(self, analyzer: Analyzer, on_batch: OnBatch = lambda s, f: None) -> None:
        self.analyzer = analyzer
        self._on_batch = on_batch
        self._done: Finished = []

    def submit(self, requests: Sequence[AnalysisRequest], now: datetime) -> bool:
        started = time.monotonic()
        finished = judge_batch(self.analyzer, requests, now)
        self._on_batch(time.monotonic() - started, finished)
        self._done += finished
        return True

    def collect(self) -> Finished:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        return None


class BackgroundJudge:
    """Judges on one worker thread, one batch at a time, so a slow metric source delays
    only the verdicts, never the pass that guards deploys and finishes rollbacks."""

    def __init__(self, analyzer: Analyzer, on_batch: OnBatch = lambda s, f: None) -> None:
        self.analyzer = analyzer
        self._on_batch = on_batch
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")
        self._lock = threading.Lock()
        self._running: Future[Finished] | None = None

    def submit(self, requests: Sequence[AnalysisRequest], now: datetime) -> bool:
        with self._lock:
            if self._running is not None and not self._running.done():
                return False
            if self._running is not None:
                return False  # finished but not collected yet: collect first
            self._running = self._pool.submit(self._run, list(requests), now)
            return True

    def _run(self, requests: Sequence[AnalysisRequest], now: datetime) -> Finished:
        started = time.monotonic()
        finished = judge_batch(self.analyzer, requests, now)
        self._on_batch(time.monotonic() - started, finished)
        return finished

    def collect(self) -> Finished:
        with self._lock:
            if self._running is None or not self._running.done():
                return []
            running, self._running = self._running, None
        return running.result()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None and not self._running.done()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
