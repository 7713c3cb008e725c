"""The pre-rollout gate never holds up the pass for long: a wedged lineage store (it
accepts the call and never answers) is "not known yet" after ``wait_seconds``, the read
goes on in the background and a later pass takes its answer.

Found by tests/chaos/test_faults_chaos.py: with MLMD's gRPC service accepting connections
and never answering, every pass waited 10 s (the store's deadline) on the gate of one
model, and every other object's deploy guard and rollback waited with it."""

from __future__ import annotations

import threading
import time

from controller.lineage import Evaluation, LineageUnavailable
from controller.lineage.worker import GateFromLineage
from controller.policy.model import RolloutPolicy
from controller.rollout.machine import GateResult
from tests.lineage.test_lineage_gate import conservative, managed

__all__ = ["conservative"]
URI = "s3://m/v2"


class Wedged:
    """Answers only once ``release`` is set; then as ``answer`` says."""

    def __init__(self, answer: Evaluation | Exception | None) -> None:
        self.release = threading.Event()
        self.answer = answer
        self.reads = 0

    def evaluation(self, model_uri: str) -> Evaluation | None:
        self.reads += 1
        self.release.wait(10)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

def waits(result: GateResult | None, why: str = "") -> bool:
    """The gate is not known yet: the model waits, never a pass, and says why."""
    return (result is not None and result.waiting and not result.passed
            and why in result.reason)



def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_store_that_does_not_answer_is_not_known_yet_within_the_wait(
        conservative: RolloutPolicy) -> None:
    store = Wedged(Evaluation(model_uri=URI, metrics={"accuracy": 0.95, "auc": 0.95}, run="r1"))
    gates = GateFromLineage(store, wait_seconds=0.2)
    item = managed(URI)
    for _ in range(3):            # three passes: each waits at most the wait, one read
        started = time.monotonic()
        assert waits(gates.evaluate(item, conservative))
        assert time.monotonic() - started < 1.0
    assert store.reads == 1
    store.release.set()
    result: list[object] = []
    _until(lambda: result.append(gates.evaluate(item, conservative)) or not waits(result[-1]))
    assert result[-1] is not None and result[-1].passed   # type: ignore[union-attr]
    assert store.reads == 1       # the answer of the read that was running


def test_a_read_that_fails_late_is_never_a_pass_and_is_read_again(
        conservative: RolloutPolicy) -> None:
    store = Wedged(LineageUnavailable("MLMD at grpc://x: Deadline Exceeded"))
    gates = GateFromLineage(store, wait_seconds=0.1)
    item = managed(URI)
    assert waits(gates.evaluate(item, conservative))
    store.release.set()
    _until(lambda: waits(gates.evaluate(item, conservative)) and store.reads >= 2)
    assert store.reads >= 2


def test_reads_of_models_no_longer_asked_about_are_forgotten(
        conservative: RolloutPolicy) -> None:
    store = Wedged(None)
    gates = GateFromLineage(store, wait_seconds=0.0, max_entries=3)
    for i in range(3):   # each asked once, then superseded before its answer was taken
        assert waits(gates.evaluate(managed(f"s3://m/v{i}"), conservative))
    store.release.set()
    _until(lambda: store.reads == 3)
    time.sleep(0.2)
    gates.evaluate(managed("s3://m/v3"), conservative)
    assert set(gates._reads) <= {"s3://m/v3"}
