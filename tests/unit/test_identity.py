"""Nothing a user can write is taken as identity or as something the controller wrote
(issue 14, defect 3). Each test is an attack that worked before: a hand-written
last-good spec restored in the controller's name, a command claiming to be a Slack
approval, a forged or copied state. The writer of a command is what the API server says
(the commands webhook, played by FakeObjects as the API server would call it)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.errors import Rejected
from controller.kube.annotations import (
    COMMANDS_ANNOTATION,
    LAST_GOOD_ANNOTATION,
    SEAL_COMMAND,
    SEAL_LAST_GOOD,
    SEAL_STATE,
    STATE_ANNOTATION,
)
from controller.kube.commands import submit_command
from controller.kube.fakes import FakeObjects
from controller.kube.webhook import stamp_commands
from controller.policystore import PolicyStore
from controller.rollout.machine import Judgement
from controller.rollout.seal import Sealer
from controller.rollout.state import Command, Phase, RolloutState
from tests.fakes import TEST_SEALER, put_state
from tests.unit.test_reconciler import ROOT, T0, isvc, make, progressing_state, store

__all__ = ["store"]
NOW = T0 + timedelta(minutes=1)


def _annotations(isvcs: FakeObjects) -> dict[str, str]:
    return dict(isvcs.objects[("models", "churn")]["metadata"]["annotations"])


def _state(isvcs: FakeObjects) -> RolloutState:
    return RolloutState.from_json(_annotations(isvcs)[STATE_ANNOTATION])


# --- the last promoted spec ----------------------------------------------------------


def _rolled_back_with_restore(tmp_path: Path, last_good: str | None) -> FakeObjects:
    source = (ROOT / "policies" / "fast.yaml").read_text().replace(
        "  onMissingData:", "  onFailure: {restorePreviousSpec: true}\n  onMissingData:")
    (tmp_path / "fast.yaml").write_text(source)
    state = progressing_state().evolve(phase=Phase.ROLLING_BACK, ending=Phase.FAILED,
                                       expected_percent=0)
    obj = isvc("s3://m/v2", 0, created="churn-predictor-00002", state=state)
    obj["status"]["components"]["predictor"]["traffic"] = [
        {"revisionName": "churn-predictor-00001", "percent": 100}]
    if last_good is not None:
        obj["metadata"]["annotations"][LAST_GOOD_ANNOTATION] = last_good
    return FakeObjects(obj, commands_webhook=TEST_SEALER)


EVIL = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://evil/model"},
        "serviceAccountName": "cluster-admin-sa"}


@pytest.mark.parametrize("forged", [
    json.dumps(EVIL),                                                     # the old format
    json.dumps({"predictor": EVIL, "seal": "A" * 43}),                    # a made-up seal
    TEST_SEALER.seal_text(SEAL_LAST_GOOD, "another-object", {"predictor": EVIL}),  # copied
    TEST_SEALER.seal_text(SEAL_STATE, "u1", {"predictor": EVIL}),         # another purpose
    Sealer([b"a key that is not the controller's, 32b+"]).seal_text(
        SEAL_LAST_GOOD, "u1", {"predictor": EVIL}),                       # another key
], ids=["unsealed", "made-up-seal", "copied-from-another-object", "sealed-as-state",
        "another-key"])
def test_a_hand_written_last_good_spec_is_never_restored(tmp_path: Path, forged: str) -> None:
    isvcs = _rolled_back_with_restore(tmp_path, forged)
    reconciler, events, _ = make(PolicyStore(tmp_path), isvcs, now=NOW)
    reconciler.run_once()
    (_, _, patch), = isvcs.patches
    assert "spec" not in patch                       # nothing restored
    assert _state(isvcs).phase == Phase.FAILED       # the rollback itself stands
    refused = [e for e in events.recorded if e["reason"] == "RestoreFailed"]
    assert refused and "refusing to restore" in refused[0]["message"]


def test_the_spec_recorded_at_a_promotion_is_restored(tmp_path: Path) -> None:
    good = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m/v1"}}
    isvcs = _rolled_back_with_restore(
        tmp_path, TEST_SEALER.seal_text(SEAL_LAST_GOOD, "u1", {"predictor": good}))
    reconciler, _, _ = make(PolicyStore(tmp_path), isvcs, now=NOW)
    reconciler.run_once()
    (_, _, patch), = isvcs.patches
    assert patch["spec"]["predictor"]["model"]["storageUri"] == "s3://m/v1"


def test_a_promotion_records_the_spec_sealed_for_the_object(store: PolicyStore) -> None:
    state = progressing_state().evolve(phase=Phase.PROMOTING, step=2, expected_percent=None)
    obj = isvc("s3://m/v2", None, rolled_out="churn-predictor-00002",
               created="churn-predictor-00002", state=state)
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, _, _ = make(store, isvcs, now=NOW)
    reconciler.run_once()
    recorded = _annotations(isvcs)[LAST_GOOD_ANNOTATION]
    opened = TEST_SEALER.open(SEAL_LAST_GOOD, "u1", recorded, what="last good")
    assert opened["predictor"]["model"]["storageUri"] == "s3://m/v2"


# --- the rollout state ---------------------------------------------------------------


def test_a_forged_state_is_unreadable_and_never_acted_on(store: PolicyStore) -> None:
    """Jumping a rollout to its last step by hand-writing the state."""
    forged = progressing_state().evolve(step=1, expected_percent=50)
    obj = isvc("s3://m/v2", 50, created="churn-predictor-00002")
    obj["metadata"]["annotations"][STATE_ANNOTATION] = forged.to_json()   # no seal
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"),
                                 T0 + timedelta(minutes=5))
    reconciler.run_once()
    assert isvcs.patches == []
    assert [e["reason"] for e in events.recorded] == ["StateUnreadable"]
    assert "no seal" in events.recorded[0]["message"]


def test_a_state_copied_from_another_object_is_unreadable(store: PolicyStore) -> None:
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002")
    obj["metadata"]["annotations"][STATE_ANNOTATION] = TEST_SEALER.seal_text(
        SEAL_STATE, "some-other-uid", progressing_state().to_mapping())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"),
                                 T0 + timedelta(minutes=5))
    reconciler.run_once()
    assert isvcs.patches == []
    assert "does not verify" in events.recorded[0]["message"]


def test_a_state_edited_by_hand_after_the_controller_wrote_it_is_unreadable(
        store: PolicyStore) -> None:
    obj = put_state(isvc("s3://m/v2", 10, created="churn-predictor-00002"), progressing_state())
    edited = json.loads(obj["metadata"]["annotations"][STATE_ANNOTATION])
    edited["step"] = 1                                 # the seal stays, the content changes
    obj["metadata"]["annotations"][STATE_ANNOTATION] = json.dumps(edited)
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"),
                                 T0 + timedelta(minutes=5))
    reconciler.run_once()
    assert isvcs.patches == [] and events.recorded[0]["reason"] == "StateUnreadable"


# --- commands ------------------------------------------------------------------------


def _approval_pending(store: PolicyStore) -> tuple[FakeObjects, RolloutState]:
    from controller.rollout.state import Pause, PauseReason

    state = progressing_state().evolve(
        phase=Phase.PAUSED, pause=Pause(PauseReason.APPROVAL, T0, T0 + timedelta(hours=1)))
    return FakeObjects(isvc("s3://m/v2", 10, created="churn-predictor-00002",
                                      state=state), commands_webhook=TEST_SEALER), state


def test_a_command_claiming_to_be_a_slack_approval_is_recorded_as_its_real_writer(
        store: PolicyStore) -> None:
    isvcs, state = _approval_pending(store)
    isvcs.user, isvcs.groups = "mallory@example.com", ("system:authenticated",)
    forged = Command("c1", "approve", "U012AB3CD (alice)", T0, via="slack", rollout=state.id,
                     step=0)
    submit_command(isvcs, "models", "churn", forged)
    [entry] = json.loads(_annotations(isvcs)[COMMANDS_ANNOTATION])
    assert (entry["by"], entry["via"]) == ("mallory@example.com", "kubernetes")
    assert entry["groups"] == ["system:authenticated"]
    reconciler, events, _ = make(store, isvcs, now=NOW)
    reconciler.run_once()
    approvals = _state(isvcs).approvals
    assert [(a.by, a.via) for a in approvals] == [("mallory@example.com", "kubernetes")]
    assert "approved by mallory@example.com via kubernetes" in events.recorded[0]["message"]


def test_a_command_written_around_the_webhook_is_refused_with_an_event(
        store: PolicyStore) -> None:
    isvcs, state = _approval_pending(store)
    isvcs.commands_webhook = None            # the webhook is not installed, or was bypassed
    submit_command(isvcs, "models", "churn",
                   Command("c1", "promote", "alice", T0, rollout=state.id))
    reconciler, events, _ = make(store, isvcs, now=NOW)
    reconciler.run_once()
    after = _state(isvcs)
    assert after.phase == Phase.PAUSED and after.step == 0     # not obeyed
    assert COMMANDS_ANNOTATION not in _annotations(isvcs)     # and not kept
    refused = [e for e in events.recorded if e["reason"] == "CommandRefused"]
    assert refused and "not authenticated" in refused[0]["message"]


def test_the_slack_handler_seals_its_own_commands_and_the_webhook_keeps_them(
        store: PolicyStore) -> None:
    isvcs, state = _approval_pending(store)
    isvcs.user = "system:serviceaccount:rollwise-system:rollwise-controller"
    click = Command("s1", "approve", "U012AB3CD (alice)", T0, via="slack", rollout=state.id,
                    step=0)
    submit_command(isvcs, "models", "churn", click, sealer=TEST_SEALER)
    [entry] = json.loads(_annotations(isvcs)[COMMANDS_ANNOTATION])
    assert (entry["by"], entry["via"]) == ("U012AB3CD (alice)", "slack")
    reconciler, _, _ = make(store, isvcs, now=NOW)
    reconciler.run_once()
    assert [(a.by, a.via) for a in _state(isvcs).approvals] == [("U012AB3CD (alice)", "slack")]


def _review(old: dict[str, Any], new: dict[str, Any], operation: str = "UPDATE",
            user: str = "bob") -> dict[str, Any]:
    return {"request": {"uid": "req-1", "operation": operation, "object": new,
                        "oldObject": old, "userInfo": {"username": user, "groups": ["sre"]},
                        "kind": {"group": "serving.kserve.io", "version": "v1beta1",
                                 "kind": "InferenceService"}}}


def _with_commands(entries: list[Any]) -> dict[str, Any]:
    return {"metadata": {"uid": "u1", "annotations": {COMMANDS_ANNOTATION:
                                                      json.dumps(entries)}}}


def test_the_webhook_keeps_sealed_entries_verbatim_and_restamps_a_changed_one() -> None:
    kept = TEST_SEALER.seal(SEAL_COMMAND, "u1", Command("c1", "pause", "alice", T0)
                            .to_mapping())
    tampered = dict(kept, action="promote")            # alice's seal, a different command
    answer = stamp_commands(_review({}, _with_commands([kept, tampered])), TEST_SEALER)
    response = answer["response"]
    assert response["allowed"] and response["patchType"] == "JSONPatch"
    (op,) = json.loads(base64.b64decode(response["patch"]))
    assert op["path"] == "/metadata/annotations/rollwise.io~1commands"
    first, second = json.loads(op["value"])
    assert first == kept
    assert (second["action"], second["by"], second["groups"]) == ("promote", "bob", ["sre"])
    assert TEST_SEALER.verify(SEAL_COMMAND, "u1", second)


@pytest.mark.parametrize(("entries", "operation", "message"), [
    ([{"id": "c1", "action": "approve", "by": "x", "at": T0.isoformat()}], "CREATE",
     "existing InferenceService"),
    ([{"id": "c1", "action": "explode", "by": "x", "at": T0.isoformat()}], "UPDATE",
     "unknown command action"),
    ([{"id": f"c{i}", "action": "pause", "by": "x", "at": T0.isoformat()} for i in range(21)],
     "UPDATE", "at most 20"),
    (["not an object"], "UPDATE", "a command is a JSON object"),
])
def test_the_webhook_denies_what_it_cannot_stamp(entries: list[Any], operation: str,
                                                 message: str) -> None:
    answer = stamp_commands(_review({}, _with_commands(entries), operation), TEST_SEALER)
    assert not answer["response"]["allowed"]
    assert message in answer["response"]["status"]["message"]


def test_the_fake_api_refuses_a_denied_command_like_the_api_server(store: PolicyStore) -> None:
    isvcs, _ = _approval_pending(store)
    with pytest.raises(Rejected, match="unknown command action"):
        isvcs.patch("models", "churn", {"metadata": {"annotations": {
            COMMANDS_ANNOTATION: json.dumps([{"id": "x", "action": "explode", "by": "m",
                                              "at": T0.isoformat()}])}}})



# --- approvers: who may approve and promote --------------------------------------------


def _restricted_store(tmp_path: Path) -> PolicyStore:
    source = (ROOT / "policies" / "fast.yaml").read_text().replace(
        "  notifications:", "  approvers: {kubernetesUsers: [alice@example.com], "
        "kubernetesGroups: [sre]}\n  notifications:")
    (tmp_path / "fast.yaml").write_text(source)
    return PolicyStore(tmp_path)


@pytest.mark.parametrize(("user", "groups", "action", "obeyed"), [
    ("mallory@example.com", ("system:authenticated",), "approve", False),
    ("mallory@example.com", ("system:authenticated",), "promote", False),
    ("alice@example.com", ("system:authenticated",), "approve", True),
    ("bob@example.com", ("system:authenticated", "sre"), "approve", True),
    ("mallory@example.com", ("system:authenticated",), "abort", True),   # makes it safer
])
def test_only_the_policy_approvers_may_approve_or_promote(
        tmp_path: Path, user: str, groups: tuple[str, ...], action: str, obeyed: bool) -> None:
    from controller.rollout.state import Pause, PauseReason

    state = progressing_state().evolve(
        phase=Phase.PAUSED, pause=Pause(PauseReason.APPROVAL, T0, T0 + timedelta(hours=1)))
    isvcs = FakeObjects(isvc("s3://m/v2", 10, created="churn-predictor-00002", state=state),
                        commands_webhook=TEST_SEALER)
    isvcs.user, isvcs.groups = user, groups
    submit_command(isvcs, "models", "churn", Command("c1", action, "anyone", T0,  # type: ignore[arg-type]
                                                     rollout=state.id, step=0))
    reconciler, events, _ = make(_restricted_store(tmp_path), isvcs, now=NOW)
    reconciler.run_once()
    after = _state(isvcs)
    refused = [e for e in events.recorded if e["reason"] == "CommandRefused"]
    if obeyed:
        assert not refused and after.phase != Phase.PAUSED
    else:
        assert after.phase == Phase.PAUSED and after.step == 0
        assert refused and f"{user} is not an approver" in refused[0]["message"]
        assert COMMANDS_ANNOTATION not in _annotations(isvcs)   # handled, not retried
