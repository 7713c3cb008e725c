"""Work per pass grows with the objects that need work (issue 17): an object left with no
rollout in flight is not read again until it changes, the policies change, leadership is
regained or the resync period has passed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from controller import reconciler as reconciler_module
from controller.kube.fakes import FakeObjects
from controller.policystore import PolicyStore
from tests.unit.test_reconciler import T0, isvc, make, progressing_state, store

__all__ = ["store"]


def quiet_model(name: str) -> dict[str, Any]:
    obj = isvc("s3://m/v1", None)
    obj["metadata"].update(name=name, uid=f"u-{name}")
    return obj


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the objects each pass reads (``read_managed``), in order."""
    seen: list[str] = []
    real = reconciler_module.read_managed

    def spy(obj: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(obj["metadata"]["name"])
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(reconciler_module, "read_managed", spy)
    return seen


def gauge(reconciler: Any, phase: str) -> float:
    value: float = reconciler.telemetry.rollouts.labels(phase)._value.get()
    return value


def test_an_object_with_no_rollout_in_flight_is_read_only_when_it_changes(
        store: PolicyStore, reads: list[str]) -> None:
    running = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(quiet_model("a"), quiet_model("b"), running)
    clock = [T0]
    reconciler, _, _ = make(store, isvcs)
    reconciler.clock = lambda: clock[0]

    def one_pass() -> list[str]:
        reads.clear()
        reconciler.run_once()
        clock[0] += timedelta(seconds=1)
        return sorted(set(reads))

    assert one_pass() == ["a", "b", "churn"]     # a and b adopted: a write each
    assert one_pass() == ["a", "b", "churn"]     # their writes are read back once
    assert one_pass() == ["churn"]               # then they are quiet; the rollout is not
    assert gauge(reconciler, "Succeeded") == 2   # ... and still counted
    assert reconciler.telemetry.objects_skipped._value.get() == 2
    isvcs.patch("models", "a", {"metadata": {"labels": {"team": "x"}}})
    assert one_pass() == ["a", "churn"]          # a changed: read again
    assert one_pass() == ["churn"]


def test_a_resync_a_policy_change_and_a_new_leadership_read_everything(
        store: PolicyStore, reads: list[str]) -> None:
    isvcs = FakeObjects(quiet_model("a"))
    clock = [T0]
    reconciler, _, _ = make(store, isvcs)
    reconciler.clock = lambda: clock[0]
    for _ in range(3):
        reconciler.run_once()
        clock[0] += timedelta(seconds=1)
    reads.clear()
    reconciler.run_once()
    assert reads == []
    clock[0] += reconciler.resync
    reconciler.run_once()
    assert reads == ["a"]                       # the resync
    reads.clear()
    reconciler.run_once()
    assert reads == []
    reconciler.reset()                          # leadership lost and regained
    reconciler.run_once()
    assert reads == ["a"]
    reads.clear()
    policy_file = next(store.directory.glob("*.yaml"))
    policy_file.write_text(policy_file.read_text().replace("minDuration: 2m",
                                                           "minDuration: 3m"))
    reconciler.run_once()
    assert reads == ["a"]                       # the policies changed


def test_a_failing_object_is_never_quiet(store: PolicyStore, reads: list[str]) -> None:
    broken = quiet_model("broken")
    broken["metadata"]["annotations"]["rollwise.io/rollout"] = "{not json"
    isvcs = FakeObjects(broken)
    reconciler, events, _ = make(store, isvcs)
    for _ in range(3):
        reads.clear()
        reconciler.run_once()
        assert reads == ["broken"]
    assert [e["reason"] for e in events.recorded].count("StateUnreadable") == 1
