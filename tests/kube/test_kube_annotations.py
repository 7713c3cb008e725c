"""The annotation codec: objects in the field carry these values across upgrades, so each
format is pinned to the exact text Rollwise wrote before the seam (the golden values below
were produced by that code with the same key), and each sealed value is refused when it
is not Rollwise's for this object."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from controller.errors import StateUnreadable
from controller.kube.annotations import (
    ANNOTATION_KEYS,
    LAST_GOOD_ANNOTATION,
    MODEL_ARTIFACT_ANNOTATION,
    POLICY_ANNOTATION,
    SEAL_COMMAND,
    STATE_ANNOTATION,
    NothingToRestore,
    commands_value,
    last_good_value,
    model_artifact_annotations,
    open_last_good,
    open_slack_message,
    read_state,
    read_stored,
    slack_message_value,
    state_value,
)
from controller.rollout.state import Command, Phase, RolloutState
from tests.fakes import TEST_SEALER

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STATE = RolloutState(id="abc-1", policy="fast", spec_hash="d96febfc81e595887e51e72d7be84cb4",
                     phase=Phase.PROGRESSING, started_at=T0, phase_since=T0, step=1,
                     expected_percent=25)
GOOD = {"minReplicas": 2, "model": {"modelFormat": {"name": "sklearn"},
                                    "storageUri": "s3://m/v1"}}

GOLDEN_STATE = (  # closed_steps became the evidence ledger (issue 15)
    '{"approvals":[],"baseline_revision":null,"baseline_storage_uri":null,"ending":null,"ev'
    'idence":{},"expected_percent":25,"handled_commands":[],"id":"abc-1","known_revision":n'
    'ull,"last_decision":null,"last_events":[],"last_verdict":"","lineage_execution":null,"'
    'missing_since":null,"pause":null,"phase":"Progressing","phase_since":"2026-03-01T09:00'
    ':00+00:00","policy":"fast","revision":null,"seal":"k9fwXfV-NUbcDRgdItPmfGwe8ApEjpQG9Hb'
    'RauCddHc","spec_hash":"d96febfc81e595887e51e72d7be84cb4","started_at":"2026-03-01T09:0'
    '0:00+00:00","step":1,"step_started_at":null,"storage_uri":"","verdicts":[],"version":1'
    '}')
GOLDEN_LAST_GOOD = (
    '{"predictor":{"minReplicas":2,"model":{"modelFormat":{"name":"sklearn"},'
    '"storageUri":"s3://m/v1"}},"seal":"pc1SALdwmXAT0S1IGuTuJdQhhCGOJzrSRpBnpt7NdWY"}')
GOLDEN_SLACK = ('{"channel":"C1","rollout":"abc-1",'
                '"seal":"JXL-iuURQS8EvMIUVxVZjPUDAxpMIRHAR-WZpDRYVf0","ts":"1.2"}')
GOLDEN_COMMANDS = (
    '[{"id":"c1","action":"approve","by":"alice","at":"2026-03-01T09:05:00+00:00",'
    '"via":"slack","rollout":"abc-1","step":1,"reason":"","groups":[],'
    '"seal":"Lt5tjNx51ck3THcQgYdnsjFefkpDZRFB39cfUDIzqwA"}]')


def test_the_keys_are_the_fixed_set_kserve_is_told_to_ignore() -> None:
    assert ANNOTATION_KEYS == ("rollwise.io/policy", "rollwise.io/rollout",
                               "rollwise.io/commands", "rollwise.io/last-good-predictor",
                               "rollwise.io/slack-message", "rollwise.io/model-artifact-id")


def test_each_value_is_written_exactly_as_before_the_seam() -> None:
    command = Command("c1", "approve", "alice", datetime(2026, 3, 1, 9, 5, tzinfo=UTC),
                      via="slack", rollout="abc-1", step=1)
    assert state_value(STATE, "u1", TEST_SEALER) == GOLDEN_STATE
    assert last_good_value(GOOD, "u1", TEST_SEALER) == GOLDEN_LAST_GOOD
    assert slack_message_value("abc-1", "C1", "1.2", "u1", TEST_SEALER) == GOLDEN_SLACK
    assert commands_value([TEST_SEALER.seal(SEAL_COMMAND, "u1", command.to_mapping())]) \
        == GOLDEN_COMMANDS
    assert commands_value([]) is None                     # the key goes
    assert model_artifact_annotations(42) == {MODEL_ARTIFACT_ANNOTATION: "42"}
    assert model_artifact_annotations(None) == {}


def test_values_written_before_the_seam_read_back() -> None:
    assert read_state(GOLDEN_STATE, "u1", TEST_SEALER) == STATE
    assert open_last_good({LAST_GOOD_ANNOTATION: GOLDEN_LAST_GOOD}, "models/churn", "u1",
                          TEST_SEALER) == GOOD
    assert open_slack_message(GOLDEN_SLACK, "abc-1", "u1", TEST_SEALER) == ("C1", "1.2")
    assert open_slack_message(GOLDEN_SLACK, "later-2", "u1", TEST_SEALER) is None


def test_a_value_sealed_for_another_object_is_refused() -> None:
    with pytest.raises(StateUnreadable, match=STATE_ANNOTATION):
        read_state(GOLDEN_STATE, "u2", TEST_SEALER)
    with pytest.raises(NothingToRestore, match="refusing to restore"):
        open_last_good({LAST_GOOD_ANNOTATION: GOLDEN_LAST_GOOD}, "models/churn", "u2",
                       TEST_SEALER)
    with pytest.raises(StateUnreadable):
        open_slack_message(GOLDEN_SLACK, "abc-1", "u2", TEST_SEALER)
    with pytest.raises(NothingToRestore, match="no promoted predictor spec recorded"):
        open_last_good({}, "models/churn", "u1", TEST_SEALER)


def test_an_unreadable_state_names_the_annotation() -> None:
    with pytest.raises(ValueError, match=f"^{STATE_ANNOTATION}: unreadable rollout state"):
        read_state("{not json", "u1", None)


def test_read_stored_without_a_key_shows_what_is_written_unverified() -> None:
    obj = {"metadata": {"namespace": "models", "name": "churn", "uid": "u1",
                        "resourceVersion": "7", "annotations": {
                            POLICY_ANNOTATION: "fast", STATE_ANNOTATION: GOLDEN_STATE,
                            "rollwise.io/commands": json.dumps([{"id": "c9"}])}}}
    stored = read_stored(obj)
    assert stored is not None and not stored.verified
    assert stored.key == "models/churn" and stored.state == STATE
    assert stored.commands == () and "KeyError" in stored.bad_commands[0]
    assert read_stored({"metadata": {"annotations": {}}}) is None   # not opted in
