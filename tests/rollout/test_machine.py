"""The rollout state machine, tested directly: transitions, commands and invariants."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy.loader import load_text
from controller.policy.model import PolicySpec
from controller.rollout import machine
from controller.rollout.machine import (
    GateResult,
    Judgement,
    Promote,
    Result,
    RollBack,
    SetCanary,
    gate_due,
    with_event_records,
)
from controller.rollout.state import (
    Command,
    Observation,
    PauseReason,
    Phase,
    RolloutState,
    TrafficTarget,
)
from controller.routers.kserve_knative import KNATIVE

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY_YAML = """
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: p}
spec:
  steps:
    - weight: 10
    - weight: 25
      pause: {approval: {timeout: 1h}}
    - weight: 50
      pause: {duration: 10m}
    - weight: 100
  stepDefaults: {minDuration: 2m, minRequests: 10}
  readyTimeout: 5m
  analysis:
    checks: [{name: errors, kind: ratio}]
  onInconclusive: {deadline: 30m, action: pause}
  onMissingData: {after: 5m, action: rollback}
"""
POLICY: PolicySpec = load_text(POLICY_YAML, "p.yaml")[0].policy.spec
PASS = Judgement("pass", "no regression", evidence={"errors": {"kept": 1}},
                 closing={"errors": {"kept": 2}})
FAIL = Judgement("fail", "error rate 2% vs 0.5%")
WAIT = Judgement("continue", "not enough data")
MISSING = Judgement("continue", "no series for errors", missing=True)


def decide(*args: Any, **kwargs: Any) -> Result:
    """The machine on an object the Knative router drives (its confirmations, its words)."""
    return machine.decide(*args, router=KNATIVE, **kwargs)


def stable(percent: int | None = None, spec: str = "h1", created: str = "m-1",
           ready: str | None = None) -> Observation:
    """An InferenceService whose rolled-out revision is m-1."""
    ready = ready or created
    if percent is None or created == "m-1":
        traffic = (TrafficTarget(ready if percent is None else "m-1", 100, latest=True),)
    else:
        traffic = (TrafficTarget(ready, percent, latest=True),
                   TrafficTarget("m-1", 100 - percent, tag="prev"))
    return Observation(spec_hash=spec, storage_uri=f"s3://m/{spec}", canary_percent=percent,
                       latest_created=created, latest_ready=ready, latest_rolled_out="m-1",
                       traffic=traffic)


def adopted() -> RolloutState:
    result = decide(None, "p", POLICY, stable(), T0)
    assert result.state is not None and result.state.phase == Phase.SUCCEEDED
    return result.state


def progressing(step: int = 0, at: datetime = T0) -> RolloutState:
    state = decide(adopted(), "p", POLICY, stable(10, "h2", "m-2", "m-1"), at).state
    assert state is not None
    return state.evolve(phase=Phase.PROGRESSING, revision="m-2", step=step, step_started_at=at,
                        expected_percent=POLICY.steps[step].weight)


def canary_obs(percent: int) -> Observation:
    return stable(percent, "h2", "m-2", "m-2")


# --- starting -------------------------------------------------------------------------


def test_first_sight_adopts_the_serving_revision_without_touching_traffic() -> None:
    result = decide(None, "p", POLICY, stable(), T0)
    assert result.traffic is None and result.promoted    # what serves is the good spec
    assert result.state is not None and result.state.revision == "m-1"


@pytest.mark.parametrize(("phase", "spec", "gated", "due"), [
    (Phase.PENDING, "h2", True, True),
    (Phase.PENDING, "h2", False, False),         # no gate in the policy
    (Phase.PENDING, "h3", True, False),          # a newer spec starts a new rollout first
    (Phase.BLOCKED, "h2", True, False),          # judged already: blocked stays blocked
    (Phase.WAITING_READY, "h2", True, False),
])
def test_the_gate_is_asked_only_while_pending_for_the_spec_that_serves(
        phase: Phase, spec: str, gated: bool, due: bool) -> None:
    policy = POLICY if not gated else load_text(POLICY_YAML.replace(
        "  readyTimeout", "  gates: {preRollout: {metrics: [{name: auc, min: 0.9}]}}\n"
        "  readyTimeout"), "g.yaml")[0].policy.spec
    state = progressing().evolve(phase=phase)
    assert gate_due(state, policy, stable(10, spec)) is due
    assert gate_due(None, policy, stable(10, spec)) is False


def test_new_model_is_held_at_the_first_step_when_the_webhook_did_not() -> None:
    result = decide(adopted(), "p", POLICY, stable(None, "h2", "m-1"), T0)
    assert result.traffic == SetCanary(10)
    assert result.state is not None and result.state.phase == Phase.PENDING
    assert {e.reason for e in result.events} == {"RolloutStarted", "UnguardedDeploy"}


def test_new_model_already_at_the_first_step_needs_no_write_of_traffic() -> None:
    result = decide(adopted(), "p", POLICY, stable(10, "h2", "m-1"), T0)
    assert result.traffic is None and result.state is not None


def test_gate_configured_starts_at_zero_and_blocks_a_failing_model() -> None:
    gated = POLICY.model_copy(update={"gates": POLICY.gates.model_copy(update={
        "pre_rollout": load_text(POLICY_YAML.replace(
            "  readyTimeout", "  gates: {preRollout: {metrics: [{name: auc, min: 0.9}]}}\n"
            "  readyTimeout"), "g.yaml")[0].policy.spec.gates.pre_rollout})})
    start = decide(adopted(), "p", gated, stable(None, "h2"), T0)
    assert start.traffic == SetCanary(0)
    assert start.state is not None
    waiting = decide(start.state, "p", gated, stable(0, "h2", "m-2", "m-1"), T0)
    assert waiting.state == start.state  # no gate result yet: nothing moves
    blocked = decide(start.state, "p", gated, stable(0, "h2", "m-2", "m-1"), T0,
                     gate=GateResult(False, "auc 0.85 < 0.9"))
    assert blocked.state is not None and blocked.state.phase == Phase.BLOCKED
    assert blocked.traffic is None and "auc 0.85" in blocked.events[0].message


def test_a_gate_that_cannot_be_asked_holds_the_model_and_says_why_once() -> None:
    gated = POLICY.model_copy(update={"gates": POLICY.gates.model_copy(update={
        "pre_rollout": load_text(POLICY_YAML.replace(
            "  readyTimeout", "  gates: {preRollout: {metrics: [{name: auc, min: 0.9}]}}\n"
            "  readyTimeout"), "g.yaml")[0].policy.spec.gates.pre_rollout})})
    start = decide(adopted(), "p", gated, stable(None, "h2"), T0).state
    assert start is not None
    obs = stable(0, "h2", "m-2", "m-1")
    down = GateResult(False, "lineage (ML Metadata) unavailable: connection refused",
                      waiting=True)
    first = decide(start, "p", gated, obs, T0 + timedelta(seconds=1), gate=down)
    assert first.state is not None and first.state.phase == Phase.PENDING
    assert first.traffic is None
    assert [(e.reason, e.warning) for e in first.events] == [("GateWaiting", True)]
    assert "connection refused" in first.events[0].message
    assert first.state.last_decision is not None
    assert "waiting for the pre-rollout gate" in first.state.last_decision.reason
    # The same reason again: no write, no Event; a new reason is told.
    again = decide(first.state, "p", gated, obs, T0 + timedelta(seconds=2), gate=down)
    assert again.state == first.state and again.events == ()
    slow = replace(down, reason="lineage (ML Metadata) has not answered yet")
    told = decide(first.state, "p", gated, obs, T0 + timedelta(seconds=3), gate=slow)
    assert [e.reason for e in told.events] == ["GateWaiting"]
    # Never promoted on an unanswered gate; once it answers, the rollout goes on.
    assert told.state is not None
    moved = decide(told.state, "p", gated, obs, T0 + timedelta(seconds=4),
                   gate=GateResult(True, "auc 0.95 >= 0.9"))
    assert moved.state is not None and moved.state.phase == Phase.WAITING_READY


def test_revision_created_then_ready_starts_step_one() -> None:
    start = decide(adopted(), "p", POLICY, stable(10, "h2", "m-1"), T0).state
    created = decide(start, "p", POLICY, stable(10, "h2", "m-2", "m-1"), T0).state
    assert created is not None and created.phase == Phase.WAITING_READY
    assert created.revision == "m-2"
    ready = decide(created, "p", POLICY, canary_obs(10), T0 + timedelta(seconds=5))
    assert ready.state is not None and ready.state.phase == Phase.PROGRESSING
    assert ready.state.step == 0 and ready.traffic is None


def test_revision_never_ready_is_rolled_back_after_the_ready_timeout() -> None:
    start = decide(adopted(), "p", POLICY, stable(10, "h2", "m-1"), T0).state
    created = decide(start, "p", POLICY, stable(10, "h2", "m-2", "m-1"), T0).state
    still = decide(created, "p", POLICY, stable(10, "h2", "m-2", "m-1"), T0 + timedelta(minutes=4))
    assert still.state == created
    late = decide(created, "p", POLICY, stable(10, "h2", "m-2", "m-1"), T0 + timedelta(minutes=6))
    assert isinstance(late.traffic, RollBack)
    assert late.state is not None and late.state.phase == Phase.ROLLING_BACK
    assert "not ready within 5m" in late.events[0].message


def test_a_revision_that_appeared_while_the_controller_was_away_is_not_rolled_back() -> None:
    """Issue 14, defect 4: readyTimeout was checked before looking for the revision, so a
    controller down longer than readyTimeout rolled back a revision that exists and serves."""
    start = decide(adopted(), "p", POLICY, stable(10, "h2", "m-1"), T0).state
    back = T0 + timedelta(minutes=20)              # the controller returns after 20 minutes
    seen = replace(stable(10, "h2", "m-2", "m-2"), watched_since=back)
    created = decide(start, "p", POLICY, seen, back)
    assert created.state is not None and created.state.phase == Phase.WAITING_READY
    assert created.traffic is None
    ready = decide(created.state, "p", POLICY, seen, back + timedelta(seconds=1))
    assert ready.state is not None and ready.state.phase == Phase.PROGRESSING


def test_ready_timeout_counts_only_the_time_the_controller_watched() -> None:
    start = decide(adopted(), "p", POLICY, stable(10, "h2", "m-1"), T0).state
    created = decide(start, "p", POLICY, stable(10, "h2", "m-2", "m-1"), T0).state
    back = T0 + timedelta(minutes=30)              # a failover after a long outage
    not_ready = replace(stable(10, "h2", "m-2", "m-1"), watched_since=back)
    assert decide(created, "p", POLICY, not_ready, back).state == created
    assert decide(created, "p", POLICY, not_ready, back + timedelta(minutes=4)).state == created
    late = decide(created, "p", POLICY, not_ready, back + timedelta(minutes=6))
    assert isinstance(late.traffic, RollBack) and "not ready within 5m" in late.events[0].message
    # No revision at all: the same rule.
    nothing = replace(stable(10, "h2", "m-1"), watched_since=back)
    assert decide(start, "p", POLICY, nothing, back + timedelta(minutes=4)).state == start
    gone = decide(start, "p", POLICY, nothing, back + timedelta(minutes=6))
    assert isinstance(gone.traffic, RollBack) and "no new revision" in gone.events[0].message


def test_revision_failure_rolls_back_at_once() -> None:
    created = decide(decide(adopted(), "p", POLICY, stable(10, "h2"), T0).state, "p", POLICY,
                     stable(10, "h2", "m-2", "m-1"), T0).state
    broken = replace(stable(10, "h2", "m-2", "m-1"), revision_failure="ImagePullBackOff")
    result = decide(created, "p", POLICY, broken, T0)
    assert isinstance(result.traffic, RollBack) and "ImagePullBackOff" in result.events[0].message


# --- analysis -------------------------------------------------------------------------


def test_pass_before_min_duration_holds_then_advances() -> None:
    state = progressing()
    early = decide(state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=1), judgement=PASS)
    assert early.traffic is None
    later = decide(state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=2), judgement=PASS)
    assert later.traffic == SetCanary(25)
    assert later.state is not None and later.state.step == 1
    assert later.state.evidence == PASS.closing   # the step's last interval included


def test_fail_rolls_back_with_the_judges_reason() -> None:
    result = decide(progressing(), "p", POLICY, canary_obs(10), T0, judgement=FAIL)
    assert isinstance(result.traffic, RollBack)
    assert result.state is not None and result.state.ending == Phase.FAILED
    assert "error rate 2% vs 0.5%" in result.events[0].message


def test_missing_data_holds_then_follows_the_policy() -> None:
    state = progressing()
    first = decide(state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=3),
                   judgement=MISSING)
    assert first.traffic is None and first.events[0].reason == "MetricsMissing"
    assert first.state is not None
    held = decide(first.state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=7),
                  judgement=MISSING)
    assert held.traffic is None and held.events == ()
    gone = decide(first.state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=8),
                  judgement=MISSING)
    assert isinstance(gone.traffic, RollBack) and "metrics missing for 5m" in \
        gone.events[0].message


def test_what_a_look_learnt_is_kept_while_a_check_waits_for_data() -> None:
    # A ledger anchored at the end of a warm-up while another check (or this one) has no
    # data yet: lost, every look would re-anchor and the check would never see a request.
    learnt = Judgement("continue", "no canary observations yet", missing=True,
                       evidence={"drift": {"anchor": [1.0]}})
    state = progressing()
    first = decide(state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=3),
                   judgement=learnt)
    assert first.state is not None and first.state.evidence == {"drift": {"anchor": [1.0]}}
    later = Judgement("continue", "no canary observations yet", missing=True,
                      evidence={"drift": {"anchor": [1.0], "saved": 2}})
    held = decide(first.state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=4),
                  judgement=later)
    assert held.state is not None and held.state.evidence["drift"]["saved"] == 2
    assert held.state.missing_since == first.state.missing_since


def test_a_model_deployed_before_the_adopted_revision_was_reported_rolled_out() -> None:
    # Found end to end: adopted while KServe had not yet reported latestRolledoutRevision,
    # then v2 deployed at once: the rollout had no stable to compare with and waited in
    # silence for ever. The adopted revision is the stable one.
    from dataclasses import replace
    early = replace(stable(), latest_rolled_out=None)
    first = decide(None, "p", POLICY, early, T0).state
    assert first is not None and first.revision == "m-1"
    started = decide(first, "p", POLICY, replace(stable(10, "h2", "m-1"),
                                                 latest_rolled_out=None), T0).state
    assert started is not None and started.baseline_revision == "m-1"


def test_nothing_is_adopted_before_the_serving_layer_reports_a_revision() -> None:
    from dataclasses import replace
    empty = replace(stable(), latest_rolled_out=None, latest_created=None, latest_ready=None,
                    traffic=())
    result = decide(None, "p", POLICY, empty, T0)
    assert result.state is None and result.traffic is None and result.events == ()


def test_analysing_without_a_known_stable_is_missing_data_not_silence() -> None:
    state = progressing().evolve(baseline_revision=None)
    first = decide(state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=1))
    assert first.state is not None and first.state.missing_since is not None
    assert first.events[0].reason == "MetricsMissing"
    assert "stable revision is not known" in first.events[0].message
    later = decide(first.state, "p", POLICY, canary_obs(10), T0 + timedelta(minutes=7))
    assert isinstance(later.traffic, RollBack)     # POLICY: onMissingData rollback after 5m


def test_inconclusive_step_pauses_after_the_deadline() -> None:
    result = decide(progressing(), "p", POLICY, canary_obs(10), T0 + timedelta(minutes=30),
                    judgement=WAIT)
    assert result.state is not None and result.state.pause is not None
    assert result.state.pause.reason == PauseReason.INCONCLUSIVE


def test_approval_pause_then_approve_advances_and_records_who() -> None:
    state = progressing(step=1)
    paused = decide(state, "p", POLICY, canary_obs(25), T0 + timedelta(minutes=2),
                    judgement=PASS).state
    assert paused is not None and paused.pause is not None
    assert paused.pause.reason == PauseReason.APPROVAL
    approve = Command("c1", "approve", "alice", T0 + timedelta(minutes=3), via="slack", step=1)
    result = decide(paused, "p", POLICY, canary_obs(25), T0 + timedelta(minutes=3),
                    commands=[approve])
    assert result.traffic == SetCanary(50) and result.handled == ("c1",)
    assert result.state is not None and result.state.approvals[0].by == "alice"
    again = decide(result.state, "p", POLICY, canary_obs(50), T0 + timedelta(minutes=4),
                   commands=[approve])
    assert again.traffic is None  # a replayed approval acts once


def test_approval_never_overrides_a_failing_analysis() -> None:
    paused = decide(progressing(step=1), "p", POLICY, canary_obs(25), T0 + timedelta(minutes=2),
                    judgement=PASS).state
    result = decide(paused, "p", POLICY, canary_obs(25), T0 + timedelta(minutes=3),
                    judgement=FAIL)
    assert isinstance(result.traffic, RollBack)


def test_approval_timeout_rolls_back_without_a_human() -> None:
    paused = decide(progressing(step=1), "p", POLICY, canary_obs(25), T0 + timedelta(minutes=2),
                    judgement=PASS).state
    result = decide(paused, "p", POLICY, canary_obs(25), T0 + timedelta(hours=1, minutes=2))
    assert isinstance(result.traffic, RollBack) and "nobody approved" in result.events[0].message


def test_duration_pause_then_last_step_promotes() -> None:
    state = progressing(step=2)
    paused = decide(state, "p", POLICY, canary_obs(50), T0 + timedelta(minutes=2),
                    judgement=PASS).state
    assert paused is not None and paused.pause is not None
    result = decide(paused, "p", POLICY, canary_obs(50), T0 + timedelta(minutes=12))
    assert result.traffic == Promote()
    assert result.state is not None and result.state.phase == Phase.PROMOTING


def test_promotion_is_confirmed_from_kserve_status_not_from_memory() -> None:
    promoting = progressing(step=3).evolve(phase=Phase.PROMOTING, expected_percent=None)
    not_yet = decide(promoting, "p", POLICY, canary_obs(50).__class__(
        **{**canary_obs(50).__dict__, "canary_percent": None}), T0)
    assert not_yet.state is not None and not_yet.state.phase == Phase.PROMOTING
    done_obs = Observation("h2", "s3://m/h2", None, "m-2", "m-2", "m-2", "m-1",
                           traffic=(TrafficTarget("m-2", 100, latest=True),))
    done = decide(promoting, "p", POLICY, done_obs, T0)
    assert done.state is not None and done.state.phase == Phase.SUCCEEDED
    assert done.promoted and not not_yet.promoted     # the good spec is recorded now


def test_hand_edit_of_the_percent_pauses_and_is_not_fought() -> None:
    result = decide(progressing(), "p", POLICY, canary_obs(40), T0 + timedelta(minutes=1),
                    judgement=PASS)
    assert result.traffic is None
    assert result.state is not None and result.state.pause is not None
    assert result.state.pause.reason == PauseReason.MANUAL_EDIT
    again = decide(result.state, "p", POLICY, canary_obs(40), T0 + timedelta(minutes=5),
                   judgement=PASS)
    assert again.traffic is None
    resume = Command("r", "resume", "bob", T0 + timedelta(minutes=6))
    resumed = decide(result.state, "p", POLICY, canary_obs(40), T0 + timedelta(minutes=6),
                     commands=[resume])
    assert resumed.traffic == SetCanary(10)


def test_newer_model_mid_rollout_supersedes_and_restarts() -> None:
    result = decide(progressing(), "p", POLICY, stable(10, "h3", "m-2", "m-2"), T0)
    assert result.state is not None and result.state.phase == Phase.PENDING
    assert result.state.spec_hash == "h3"
    assert result.state.known_revision == "m-2"
    assert "Superseded" in {e.reason for e in result.events}


# --- commands -------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "phase", "expect"), [
    ("abort", Phase.PROGRESSING, RollBack),
    ("promote", Phase.PROGRESSING, Promote),
    ("pause", Phase.PROGRESSING, type(None)),
])
def test_commands(action: str, phase: Phase, expect: type) -> None:
    cmd = Command("x", action, "carol", T0)  # type: ignore[arg-type]
    result = decide(progressing().evolve(phase=phase), "p", POLICY, canary_obs(10), T0,
                    commands=[cmd])
    assert isinstance(result.traffic, expect)
    assert result.handled == ("x",)


def test_abort_after_promotion_was_written_is_ignored() -> None:
    """Found by the property test below: KServe would roll back past the stable revision."""
    promoting = progressing(step=3).evolve(phase=Phase.PROMOTING, expected_percent=None)
    result = decide(promoting, "p", POLICY, canary_obs(50), T0,
                    commands=[Command("a", "abort", "x", T0)])
    assert result.traffic is None and result.events[0].reason == "CommandIgnored"


def test_retry_after_failure_restarts_from_the_first_step() -> None:
    failed = progressing().evolve(phase=Phase.FAILED, expected_percent=0)
    result = decide(failed, "p", POLICY, canary_obs(0), T0 + timedelta(hours=1),
                    commands=[Command("r", "retry", "dana", T0 + timedelta(hours=1))])
    assert result.traffic == SetCanary(10)
    assert result.state is not None and result.state.phase == Phase.WAITING_READY
    assert result.state.id != failed.id


def test_commands_for_another_rollout_are_ignored_and_consumed() -> None:
    cmd = Command("x", "abort", "eve", T0, rollout="old-rollout")
    result = decide(progressing(), "p", POLICY, canary_obs(10), T0, commands=[cmd])
    assert result.traffic is None and result.handled == ("x",)
    assert result.events[0].reason == "CommandIgnored"


# --- invariants over random runs ---------------------------------------------------------

_judgements = st.sampled_from([PASS, FAIL, WAIT, MISSING, None])
_commands = st.sampled_from([None, None, None, "approve", "promote", "abort", "pause", "resume",
                             "retry"])


def _kserve(obs: Observation, traffic: object, promoted_spec: set[str]) -> Observation:
    """Just enough of KServe to close the loop: apply Rollwise's traffic write."""
    if traffic is None:
        return obs
    if isinstance(traffic, Promote):
        promoted_spec.add(obs.spec_hash)
        return Observation(obs.spec_hash, obs.storage_uri, None, obs.latest_created,
                           obs.latest_ready, obs.latest_ready, obs.latest_rolled_out,
                           traffic=(TrafficTarget(obs.latest_ready or "", 100, latest=True),))
    percent = 0 if isinstance(traffic, RollBack) else traffic.percent  # type: ignore[attr-defined]
    ready = obs.latest_ready or ""
    targets = (TrafficTarget(ready, percent, latest=True),
               TrafficTarget(obs.latest_rolled_out or "", 100 - percent, tag="prev"))
    return replace(obs, canary_percent=percent, traffic=targets)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_judgements, _commands, st.integers(0, 40)), min_size=1, max_size=40))
def test_invariants_hold_on_any_run(run: list[tuple[Judgement | None, str | None, int]]) -> None:
    state: RolloutState | None = adopted()
    obs = stable(10, "h2", "m-2", "m-2")
    now = T0
    promoted: set[str] = set()
    steps_seen: list[int] = []
    for i, (judgement, action, minutes) in enumerate(run):
        now += timedelta(minutes=minutes)
        commands = [Command(f"c{i}", action, "u", now)] if action else []  # type: ignore[arg-type]
        before = state
        result: Result = decide(state, "p", POLICY, obs, now, judgement=judgement,
                                commands=commands)
        state = result.state
        assert state is not None
        # The state survives a restart: it round-trips through its annotation unchanged,
        # with the transition's Events as the reconciler commits them.
        committed = with_event_records(result).state
        assert committed is not None and len(committed.last_events) == len(result.events)
        assert RolloutState.from_json(committed.to_json()) == committed
        # A failing analysis in an analysing phase always rolls back, whatever else happened.
        if before is not None and before.phase.analysing and judgement is FAIL and not commands:
            assert isinstance(result.traffic, RollBack)
        # Missing data never advances a step.
        if judgement is MISSING and not commands:
            assert not isinstance(result.traffic, SetCanary | Promote) or (
                before is not None and before.phase == Phase.PAUSED)
        # After a promotion the percent is never lowered without a spec change.
        if obs.spec_hash in promoted:
            assert result.traffic is None
        # The serving spec is recorded as the good one exactly when it becomes the stable
        # one (the rule the reconciler applied itself before the seam).
        assert result.promoted == (state.phase == Phase.SUCCEEDED and (
            before is None or before.phase != Phase.SUCCEEDED))
        # A step is never skipped: each advance moves by exactly one step (or promotes).
        if isinstance(result.traffic, SetCanary) and before is not None and \
                before.phase.analysing and state.phase == Phase.PROGRESSING:
            assert state.step in (before.step, before.step + 1)
        steps_seen.append(state.step)
        obs = _kserve(obs, result.traffic, promoted)
        # Idempotent: a command already handled is never handled again (double clicks,
        # a restart between the write and the annotation's removal).
        if result.handled:
            replay = decide(state, "p", POLICY, obs, now, commands=commands)
            assert replay.handled == ()


def test_a_notice_is_told_once_as_a_normal_event_whatever_the_verdict() -> None:
    note = "stable revision m-1 has little history in Prometheus"
    for judgement, first_reason in ((replace(WAIT, notice=note), None),
                                    (replace(MISSING, notice=note), "MetricsMissing"),
                                    (replace(FAIL, notice=note), "RollingBack")):
        result = decide(progressing(), "p", POLICY, canary_obs(10),
                        T0 + timedelta(minutes=3), judgement=judgement)
        told = [e for e in result.events if e.reason == "HistoryShort"]
        assert len(told) == 1, judgement
        assert told[0].message == note and not told[0].warning
        if first_reason is not None:
            assert first_reason in [e.reason for e in result.events]
    recorded = machine.with_event_records(decide(
        progressing(), "p", POLICY, canary_obs(10), T0 + timedelta(minutes=3),
        judgement=replace(WAIT, notice=note)))
    assert recorded.state is not None
    assert [r.reason for r in recorded.state.last_events] == ["HistoryShort"]
    # A later look finds one more interval: the message changes, the Event is the same one.
    later = machine.with_event_records(decide(
        progressing(), "p", POLICY, canary_obs(10), T0 + timedelta(minutes=3, seconds=5),
        judgement=replace(WAIT, notice=note + " (2 of 30)")))
    assert later.state is not None
    assert [r.key for r in later.state.last_events] == [
        r.key for r in recorded.state.last_events]
