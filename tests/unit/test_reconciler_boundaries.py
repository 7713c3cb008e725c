"""One bad object stops only itself: every object is reconciled inside its own error
boundary (issue 14, defect 2). Each test puts a broken object next to a healthy rollout and
checks that the healthy one still moves, and the broken one is reported on itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.kube.annotations import (
    COMMANDS_ANNOTATION,
    MAX_PENDING_COMMANDS,
    SEAL_COMMAND,
    STATE_ANNOTATION,
)
from controller.kube.fakes import FakeObjects
from controller.policystore import PolicyStore
from controller.rollout.machine import Judgement
from controller.rollout.state import Command, RolloutState
from tests.fakes import TEST_SEALER, put_state
from tests.unit.test_reconciler import T0, isvc, make, progressing_state, store

__all__ = ["store"]  # the fixture, shared with test_reconciler
NOW = T0 + timedelta(minutes=3)


def _pair(broken: dict[str, Any]) -> FakeObjects:
    """The broken object, and a healthy rollout ("churn") whose step passes now."""
    broken["metadata"]["name"] = "broken"
    broken["metadata"]["uid"] = "u-broken"
    text = broken["metadata"]["annotations"].get(STATE_ANNOTATION)
    if text is not None:  # sealed for the new uid, as the controller would have written it
        put_state(broken, RolloutState.from_json(text))
    healthy = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    return FakeObjects(broken, healthy, commands_webhook=TEST_SEALER)


def _healthy_advanced(isvcs: FakeObjects) -> bool:
    return any(name == "churn" and patch.get("spec") == {"predictor": {
        "canaryTrafficPercent": 50}} for _, name, patch in isvcs.patches)


def _reasons(events: Any, name: str) -> list[str]:
    return [e["reason"] for e in events.recorded if e["name"] == name]


def test_a_state_step_beyond_the_policy_is_unreadable_and_the_others_go_on(
        store: PolicyStore) -> None:
    broken = isvc("s3://m/v2", 10, created="churn-predictor-00002",
                  state=progressing_state().evolve(step=99))
    isvcs = _pair(broken)
    reconciler, events, analyzer = make(store, isvcs, Judgement("pass", "fine"), NOW)
    reconciler.run_once()
    assert _healthy_advanced(isvcs)
    assert not any(name == "broken" for _, name, _ in isvcs.patches)
    assert _reasons(events, "broken") == ["StateUnreadable"]
    assert "step 99 is outside" in events.recorded[0]["message"]
    assert [r.service for r in analyzer.requests] == ["churn"]  # never judged


def test_a_negative_step_and_a_timestamp_without_zone_are_unreadable(
        store: PolicyStore) -> None:
    for bad in (progressing_state().evolve(step=-1),
                progressing_state().evolve(started_at=datetime(2026, 3, 1, 9, 0))):
        isvcs = _pair(isvc("s3://m/v2", 10, created="churn-predictor-00002", state=bad))
        reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"), NOW)
        reconciler.run_once()
        assert _healthy_advanced(isvcs)
        assert _reasons(events, "broken") == ["StateUnreadable"]


def test_an_object_that_cannot_even_be_read_is_reported_and_the_others_go_on(
        store: PolicyStore) -> None:
    broken = isvc("s3://m/v1", None)
    broken["status"]["components"]["predictor"]["traffic"] = [{"revisionName": "x",
                                                                "percent": "lots"}]
    isvcs = _pair(broken)
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"), NOW)
    reconciler.run_once()
    reconciler.run_once()
    assert _healthy_advanced(isvcs)
    assert _reasons(events, "broken") == ["ReconcileFailed"]  # once, not every pass
    assert "ValueError" in events.recorded[0]["message"]
    telemetry = reconciler.telemetry
    assert telemetry.object_errors.labels("read")._value.get() == 2  # type: ignore[attr-defined]


def test_a_write_the_api_server_refuses_is_reported_on_its_object_only(
        store: PolicyStore) -> None:
    broken = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = _pair(broken)
    isvcs.rejected[("models", "broken")] = "metadata.annotations: Too long: must have at most " \
                                          "262144 bytes"
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"), NOW)
    reconciler.run_once()
    assert _healthy_advanced(isvcs)
    assert _reasons(events, "broken") == ["ReconcileFailed"]
    assert "262144" in events.recorded[0]["message"]
    assert reconciler.telemetry.objects_failing._value.get() == 1  # type: ignore[attr-defined]
    del isvcs.rejected[("models", "broken")]
    reconciler.run_once()
    assert reconciler.telemetry.objects_failing._value.get() == 0  # type: ignore[attr-defined]


def test_thousands_of_pending_commands_are_cut_to_the_newest_with_an_event(
        store: PolicyStore) -> None:
    broken = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    flood = [TEST_SEALER.seal(SEAL_COMMAND, "u-broken", Command(
        f"c{i}", "pause", "mallory", T0 + timedelta(seconds=i), rollout="other").to_mapping())
        for i in range(2000)]
    broken["metadata"]["annotations"][COMMANDS_ANNOTATION] = json.dumps(flood)
    isvcs = _pair(broken)
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"), NOW)
    for _ in range(MAX_PENDING_COMMANDS + 2):  # one command is handled per pass
        reconciler.run_once()
    assert _healthy_advanced(isvcs)
    writes = [p for _, name, p in isvcs.patches if name == "broken"]
    assert writes, "the flooded object is still reconciled"
    first = json.loads(writes[0]["metadata"]["annotations"][COMMANDS_ANNOTATION])
    assert len(first) < MAX_PENDING_COMMANDS and first[-1]["id"] == "c1999"
    assert "CommandRefused" in _reasons(events, "broken")
    left = isvcs.objects[("models", "broken")]["metadata"]["annotations"]
    assert COMMANDS_ANNOTATION not in left  # all handled (ignored: another rollout's)
    later, _, _ = make(store, isvcs, Judgement("pass", "fine"), NOW + timedelta(minutes=1))
    later.run_once()
    state = json.loads(isvcs.objects[("models", "broken")]["metadata"]["annotations"][
        STATE_ANNOTATION])
    assert state["step"] == 1  # the flood did not stop its own rollout either


def test_the_failing_gauge_forgets_an_object_that_was_deleted(store: PolicyStore) -> None:
    broken = isvc("s3://m/v1", None)
    broken["status"]["components"]["predictor"]["traffic"] = [{"percent": "lots"}]
    isvcs = _pair(broken)
    reconciler, _, _ = make(store, isvcs, Judgement("pass", "fine"), NOW)
    reconciler.run_once()
    assert reconciler.telemetry.objects_failing._value.get() == 1  # type: ignore[attr-defined]
    del isvcs.objects[("models", "broken")]
    reconciler.run_once()
    assert reconciler.telemetry.objects_failing._value.get() == 0  # type: ignore[attr-defined]


def test_commands_with_oversized_fields_are_unreadable(store: PolicyStore) -> None:
    from controller.kube.annotations import read_commands

    huge = json.loads(Command("c1", "abort", "x", datetime(2026, 1, 1, tzinfo=UTC)).to_json())
    huge["reason"] = "x" * 5000
    commands, bad = read_commands(json.dumps([huge]))
    assert commands == [] and "reason longer than 1024" in bad[0]


def test_a_controller_that_was_away_longer_than_ready_timeout_does_not_roll_back(
        store: PolicyStore) -> None:
    """Issue 14, defect 4, through the reconciler: a rollout Pending since long before this
    process started; its revision exists but is not ready yet. The default readyTimeout
    (10m) counts from when this process started watching, and restarts after a gap."""
    from controller.rollout.state import Phase

    pending = progressing_state().evolve(phase=Phase.WAITING_READY, step=0,
                                         step_started_at=None)
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002",
               ready="churn-predictor-00001", state=pending)
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    clock = [T0 + timedelta(hours=2)]
    reconciler, events, _ = make(store, isvcs)
    reconciler.clock = lambda: clock[0]
    reconciler.watch_gap = timedelta(minutes=6)       # passes a few minutes apart here
    for minutes in (0, 5, 9):
        clock[0] = T0 + timedelta(hours=2, minutes=minutes)
        reconciler.run_once()
    assert isvcs.patches == []                        # 9 minutes watched: still waiting
    for minutes in (0, 5, 9):                         # after a gap (API outage) the watch
        clock[0] = T0 + timedelta(hours=3, minutes=minutes)  # restarts
        reconciler.run_once()
    assert isvcs.patches == []
    clock[0] = T0 + timedelta(hours=3, minutes=11)    # watched 11 minutes without a gap
    reconciler.run_once()
    (_, _, patch), = isvcs.patches
    assert patch["spec"] == {"predictor": {"canaryTrafficPercent": 0}}
    assert "not ready within 10m" in events.recorded[-1]["message"]
