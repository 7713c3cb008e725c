"""Lineage off the reconciler's path: a background writer, and the pre-rollout gate read
from lineage.

I/O (a thread that calls a ``LineageStore``). The reconciler must never wait for MLMD, and
an MLMD outage must never lose a record or let a model through:

- ``LineageWorker.submit`` only puts the snapshot in a map keyed by rollout id (a newer
  snapshot replaces an older one: each carries the whole state, and ``record`` is an
  upsert), so nothing is lost and the queue is bounded by the number of rollouts. A
  thread writes them, retrying with capped exponential backoff while the store is
  unavailable; when it returns, every pending rollout is caught up.
- ``GateFromLineage`` answers "not known yet" (None) while the store is unavailable or
  has not answered within ``wait_seconds`` (the read goes on in the background): the
  model keeps 0% traffic and the reconciler asks again next tick. Never a pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.kube.managed import Managed
from controller.lineage import Evaluation, LineageStore, LineageUnavailable
from controller.lineage.gate import evaluate_gate
from controller.policy.model import RolloutPolicy
from controller.rollout.machine import GateResult
from controller.rollout.snapshot import RolloutSnapshot

log = structlog.get_logger(__name__)


class LineageWorker:
    """Records rollout snapshots in the background; the latest one per rollout wins."""

    def __init__(self, store: LineageStore, registry: CollectorRegistry, *,
                 initial_backoff: float = 1.0, max_backoff: float = 60.0,
                 on_recorded: Callable[[RolloutSnapshot, int], None] | None = None) -> None:
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError(f"need 0 < initial_backoff <= max_backoff, got "
                             f"{initial_backoff!r} and {max_backoff!r}")
        self._store = store
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._on_recorded = on_recorded
        self._pending: dict[str, RolloutSnapshot] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = True
        self._last_error = ""
        self._pending_gauge = Gauge("rollwise_lineage_pending",
                                    "Rollout snapshots waiting to be recorded in lineage.",
                                    registry=registry)
        self._errors = Counter("rollwise_lineage_write_errors_total",
                               "Failed lineage writes (each retry counts).", registry=registry)
        self._writes = Counter("rollwise_lineage_writes_total",
                               "Rollout snapshots recorded in lineage.", registry=registry)

    # -- the caller's side ----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (once)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lineage-writer",
                                                daemon=True)
                self._thread.start()

    def submit(self, snapshot: RolloutSnapshot) -> None:
        """Queue this snapshot, replacing an older one of the same rollout. Never blocks
        on the store."""
        with self._cond:
            self._pending[snapshot.state.id] = snapshot
            self._pending_gauge.set(len(self._pending))
            self._cond.notify_all()

    def pending(self) -> int:
        """Rollouts whose latest snapshot is not recorded yet."""
        with self._cond:
            return len(self._pending)

    @property
    def healthy(self) -> bool:
        """False from a failed write until the next successful one."""
        return self._healthy

    @property
    def last_error(self) -> str:
        """The last write error ("" if none since the start)."""
        return self._last_error

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending (or the timeout); True when everything is written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread after the write in progress, waiting at most ``timeout`` seconds;
        True when it has ended. Pending snapshots stay pending (see ``pending``)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- the writer thread ----------------------------------------------------------------

    def _next(self) -> tuple[str, RolloutSnapshot] | None:
        with self._cond:
            while not self._pending and not self._stopping.is_set():
                self._cond.wait()
            if self._stopping.is_set():
                return None
            key = next(iter(self._pending))
            return key, self._pending[key]

    def _finish(self, key: str, snapshot: RolloutSnapshot, *, keep: bool) -> None:
        """Drop the written (or hopeless) snapshot unless a newer one arrived meanwhile;
        a snapshot to retry goes to the back so that other rollouts are not starved."""
        with self._cond:
            if self._pending.get(key) is snapshot:
                del self._pending[key]
                if keep:
                    self._pending[key] = snapshot
            self._pending_gauge.set(len(self._pending))
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = self._initial_backoff
        while (item := self._next()) is not None:
            key, snapshot = item
            try:
                execution_id = self._store.record(snapshot)
            except LineageUnavailable as err:
                self._failed(key, snapshot, err, retry=True, backoff=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            except Exception as err:  # bad input or a bug: retrying cannot fix it
                self._failed(key, snapshot, err, retry=False, backoff=0.0)
                continue
            backoff = self._initial_backoff
            self._healthy, self._last_error = True, ""
            self._writes.inc()
            self._finish(key, snapshot, keep=False)
            if self._on_recorded is not None:
                try:
                    self._on_recorded(snapshot, execution_id)
                except Exception as err:  # the record is written; a callback cannot undo it
                    log.error("lineage on_recorded callback failed", rollout=key,
                              error=str(err))

    def _failed(self, key: str, snapshot: RolloutSnapshot, err: Exception, *, retry: bool,
                backoff: float) -> None:
        self._healthy = False
        self._last_error = f"{type(err).__name__}: {err}"
        self._errors.inc()
        if retry:
            log.warning("lineage unavailable; will retry", rollout=key, error=str(err),
                        retry_in_seconds=backoff, pending=self.pending())
        else:
            log.error("lineage record refused; dropped", rollout=key, error=self._last_error)
        self._finish(key, snapshot, keep=retry)


class EvaluationReader(Protocol):
    """The one ``LineageStore`` method the gate needs."""

    def evaluation(self, model_uri: str) -> Evaluation | None:
        """The model's recorded evaluation; raises LineageUnavailable when unreachable."""


@dataclass(frozen=True)
class _Cached:
    expires: float
    evaluation: Evaluation | None


class GateFromLineage:
    """The reconciler's ``GateEvaluator`` on a ``LineageStore``. Evaluations are cached
    briefly, so a model waiting for its revision does not query MLMD every tick.

    The pass never waits on lineage for longer than ``wait_seconds``: the read runs on a
    worker thread, and a read not answered by then is "not known yet" (None, the model
    stays at 0%); a later pass takes its answer. A wedged MLMD (connections accepted, never
    answered) used to hold every pass for the store's whole deadline (10 s), delaying every
    other object's deploy guard and rollback; found by tests/chaos/test_faults_chaos.py."""

    def __init__(self, store: EvaluationReader, *, ttl_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 1024,
                 wait_seconds: float = 0.5) -> None:
        if ttl_seconds < 0 or max_entries < 1 or wait_seconds < 0:
            raise ValueError(f"need ttl_seconds >= 0, max_entries >= 1 and wait_seconds >= 0, "
                             f"got {ttl_seconds!r}, {max_entries!r} and {wait_seconds!r}")
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._wait = wait_seconds
        self._cache: dict[str, _Cached] = {}
        self._reads: dict[str, Future[Evaluation | None]] = {}   # at most one per model

    def evaluate(self, managed: Managed, policy: RolloutPolicy) -> GateResult | None:
        """The gate for the model being rolled out; ``waiting`` (with why) while lineage
        has not answered or is unavailable."""
        gate = policy.spec.gates.pre_rollout
        if gate is None:
            return GateResult(True, "the policy has no pre-rollout gate")
        uri = managed.observation.storage_uri
        if not uri:
            return GateResult(False, f"{managed.key}: the predictor has no storageUri whose "
                                     "evaluation could be read")
        try:
            evaluation = self._evaluation(uri)
        except _StillReading:
            log.warning("lineage has not answered yet; the pre-rollout gate waits",
                        namespace=managed.namespace, name=managed.name, model=uri,
                        waited_seconds=self._wait)
            return GateResult(False, "lineage (ML Metadata) has not answered the read of "
                                     f"{uri}'s evaluation yet", waiting=True)
        except LineageUnavailable as err:
            log.warning("lineage unavailable; the pre-rollout gate waits",
                        namespace=managed.namespace, name=managed.name, model=uri,
                        error=str(err))
            return GateResult(False, f"lineage (ML Metadata) unavailable: {err}", waiting=True)
        except Exception as err:  # a broken read must hold the model at 0%, not crash the pass
            log.error("reading the model's evaluation failed; the pre-rollout gate waits",
                      namespace=managed.namespace, name=managed.name, model=uri,
                      error=f"{type(err).__name__}: {err}")
            return GateResult(False, f"reading {uri}'s evaluation failed: "
                                     f"{type(err).__name__}: {err}", waiting=True)
        return evaluate_gate(gate, evaluation, model_uri=uri)

    def _evaluation(self, uri: str) -> Evaluation | None:
        now = self._clock()
        cached = self._cache.get(uri)
        if cached is not None and cached.expires > now:
            return cached.evaluation
        read = self._reads.get(uri)
        fresh = read is None
        if read is None:
            if len(self._reads) >= self._max_entries:   # models no longer asked about
                self._reads = {k: f for k, f in self._reads.items() if not f.done()}
            read = self._reads[uri] = self._read(uri)
        try:
            evaluation = read.result(timeout=self._wait if fresh else 0)
        except FutureTimeout:
            raise _StillReading from None
        finally:
            if read.done():
                self._reads.pop(uri, None)   # answered or failed: the next ask reads again
        self._cache = {k: v for k, v in self._cache.items() if v.expires > now}
        while len(self._cache) >= self._max_entries:
            self._cache.pop(next(iter(self._cache)))
        self._cache[uri] = _Cached(now + self._ttl, evaluation)
        return evaluation

    def _read(self, uri: str) -> Future[Evaluation | None]:
        """Read on a daemon thread (one per model being read; a read ends at the store's
        deadline), so that neither the pass nor the process's exit waits on it."""
        future: Future[Evaluation | None] = Future()

        def read() -> None:
            try:
                future.set_result(self._store.evaluation(uri))
            except BaseException as err:   # handed to the pass that asks next
                future.set_exception(err)

        threading.Thread(target=read, name="gate-read", daemon=True).start()
        return future


class _StillReading(Exception):
    """The evaluation is being read; not known yet."""
