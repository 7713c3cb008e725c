"""The lineage worker: the caller never waits, only the latest snapshot per rollout is
written, and an MLMD outage during a rollout is caught up exactly once afterwards (on a
wrapper, and on a real gRPC MLMD service that goes away and comes back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from controller.lineage import Evaluation, LineageUnavailable, LineageView
from controller.lineage.mlmd import ROLLOUT_TYPE, MLMDLineageStore
from controller.lineage.worker import LineageWorker
from controller.rollout.snapshot import RolloutSnapshot
from controller.settings import MLMDSettings
from tests.lineage.helpers import raw_store, story
from tests.lineage.mlmd_grpc import MLMDGrpcServer


class ControlledStore:
    """A LineageStore around a real one that can be made unavailable, or made to block."""

    def __init__(self, inner: MLMDLineageStore | None = None) -> None:
        self.inner = inner
        self.down = False
        self.gate = threading.Event()
        self.gate.set()
        self.attempts: list[RolloutSnapshot] = []
        self.recorded: list[RolloutSnapshot] = []

    def record(self, snapshot: RolloutSnapshot) -> int:
        self.attempts.append(snapshot)
        self.gate.wait(10)
        if self.down:
            raise LineageUnavailable("MLMD is down (test)")
        execution_id = self.inner.record(snapshot) if self.inner is not None else 1
        self.recorded.append(snapshot)
        return execution_id

    def evaluation(self, model_uri: str) -> Evaluation | None:
        return None

    def view(self, namespace: str, name: str) -> LineageView:
        return LineageView(endpoint=f"{namespace}/{name}")


def fast_worker(store: ControlledStore, registry: CollectorRegistry) -> LineageWorker:
    """A worker that retries every 10-50 ms, so that outages play out in test time."""
    return LineageWorker(store, registry, initial_backoff=0.01, max_backoff=0.05)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def started() -> Iterator[list[LineageWorker]]:
    workers: list[LineageWorker] = []
    yield workers
    for worker in workers:
        assert worker.stop(5)


def test_only_the_latest_snapshot_of_a_rollout_is_written(
        registry: CollectorRegistry, started: list[LineageWorker]) -> None:
    store = ControlledStore()
    worker = fast_worker(store, registry)
    started.append(worker)
    worker.start()
    a = story("s3://m/v2", "s3://m/v1")
    b = story("s3://m/v9", "s3://m/v1", rollout_id="other-1772355600")
    store.gate.clear()                      # the first write hangs in MLMD
    worker.submit(a[0])
    wait_for(lambda: len(store.attempts) == 1)
    for snap in (a[1], a[2], b[0], a[3]):
        worker.submit(snap)                 # returns at once although a write is stuck
    assert worker.pending() == 2
    assert sample(registry, "rollwise_lineage_pending") == 2
    store.gate.set()
    assert worker.flush(5)
    assert [s.state.phase for s in store.recorded] == [a[0].state.phase, a[3].state.phase,
                                                      b[0].state.phase]
    assert [s.state.id for s in store.recorded] == [a[0].state.id, a[0].state.id, b[0].state.id]
    assert sample(registry, "rollwise_lineage_writes_total") == 3
    assert sample(registry, "rollwise_lineage_pending") == 0


def test_an_outage_during_a_rollout_is_caught_up_exactly_once(
        registry: CollectorRegistry, started: list[LineageWorker], db: Path) -> None:
    real = MLMDLineageStore(MLMDSettings(backend="sqlite", sqlite_path=db))
    store = ControlledStore(real)
    worker = fast_worker(store, registry)
    started.append(worker)
    worker.start()
    a = story("s3://m/v2", "s3://m/v1")
    b = story("s3://m/v9", "s3://m/v1", rollout_id="other-1772355600")
    worker.submit(a[0])
    assert worker.flush(5) and worker.healthy

    store.down = True
    began = time.monotonic()
    for snap in (*a[1:], *b[:3]):
        worker.submit(snap)
    assert time.monotonic() - began < 0.5    # the reconciler never waits for MLMD
    wait_for(lambda: sample(registry, "rollwise_lineage_write_errors_total") >= 3)
    assert not worker.healthy
    assert "MLMD is down" in worker.last_error
    assert worker.pending() == 2
    assert real.view("team-a", "iris").rollouts[0]["outcome"] == "Pending"

    store.down = False                      # MLMD is back
    assert worker.flush(5)
    assert worker.healthy and worker.last_error == ""
    assert sample(registry, "rollwise_lineage_writes_total") == 3
    outcomes = {r["id"]: r["outcome"] for r in real.view("team-a", "iris").rollouts}
    assert outcomes == {a[0].state.id: "Succeeded", b[0].state.id: "Paused"}
    raw = raw_store(db)
    assert len(raw.get_executions_by_type(ROLLOUT_TYPE)) == 2


def test_a_real_grpc_mlmd_outage_is_caught_up(registry: CollectorRegistry,
                                               started: list[LineageWorker],
                                               db: Path) -> None:
    server = MLMDGrpcServer(db)
    server.start()
    try:
        store = MLMDLineageStore(MLMDSettings(backend="grpc", grpc_host="127.0.0.1",
                                              grpc_port=server.port), timeout_seconds=2)
        worker = LineageWorker(store, registry, initial_backoff=0.05, max_backoff=0.2)
        started.append(worker)
        worker.start()
        snapshots = story("s3://m/v2", "s3://m/v1")
        worker.submit(snapshots[0])
        assert worker.flush(10)

        server.stop()                       # metadata-grpc-service goes away
        for snap in snapshots[1:]:
            worker.submit(snap)
        wait_for(lambda: sample(registry, "rollwise_lineage_write_errors_total") >= 2)
        assert not worker.healthy and "Unavailable" in worker.last_error
        assert worker.pending() == 1

        server.start()                      # and comes back on the same address
        assert worker.flush(10)
        assert worker.healthy
        view = store.view("team-a", "iris")
        assert [(r["outcome"], r["state"]) for r in view.rollouts] == [
            ("Succeeded", "COMPLETE")]
        raw = raw_store(db)
        [execution] = raw.get_executions_by_type(ROLLOUT_TYPE)
        assert len(raw.get_events_by_execution_ids([execution.id])) == 3
    finally:
        server.stop()


def test_a_snapshot_that_cannot_be_recorded_is_dropped_not_retried(
        registry: CollectorRegistry, started: list[LineageWorker], db: Path) -> None:
    store = ControlledStore(MLMDLineageStore(MLMDSettings(backend="sqlite", sqlite_path=db)))
    worker = fast_worker(store, registry)
    started.append(worker)
    worker.start()
    good = story("s3://m/v2", "s3://m/v1")[0]
    bad = replace(good, state=good.state.evolve(id="bad-1", storage_uri=""))
    worker.submit(bad)
    assert worker.flush(5)
    assert not worker.healthy
    assert worker.last_error.startswith("ValueError: cannot record rollout 'bad-1'")
    assert "empty storage_uri ''" in worker.last_error
    worker.submit(good)
    assert worker.flush(5)
    assert worker.healthy
    assert [s.state.id for s in store.recorded] == [good.state.id]
    assert sample(registry, "rollwise_lineage_write_errors_total") == 1


def test_stop_is_bounded_even_when_mlmd_hangs(registry: CollectorRegistry) -> None:
    store = ControlledStore()
    worker = fast_worker(store, registry)
    worker.start()
    store.gate.clear()
    worker.submit(story("s3://m/v2", None)[0])
    wait_for(lambda: len(store.attempts) == 1)
    began = time.monotonic()
    assert worker.stop(timeout=0.2) is False
    assert time.monotonic() - began < 1.0
    store.gate.set()                        # let the hung write finish; the thread exits
    assert worker.stop(timeout=5)
    assert worker.pending() == 0


def test_the_backoff_is_capped_and_validated(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="initial_backoff <= max_backoff, got 5 and 1"):
        LineageWorker(ControlledStore(), registry, initial_backoff=5, max_backoff=1)
    store = ControlledStore()
    store.down = True
    worker = LineageWorker(store, CollectorRegistry(), initial_backoff=0.01, max_backoff=0.04)
    worker.start()
    worker.submit(story("s3://m/v2", None)[0])
    time.sleep(0.6)
    worker.stop(5)
    # 0.01 + 0.02 + 0.04 + 0.04 ...: at least ~12 attempts in 0.6 s with the cap at 0.04
    assert len(store.attempts) >= 8
