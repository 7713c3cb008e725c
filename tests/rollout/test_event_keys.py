"""The keys of a rollout's Events: one Event per transition, recorded once however often
it is retried, and never the key of an earlier Event of the same step with another message.

Found by the Prometheus fault chaos (tests/chaos/test_faults_chaos.py): a second hold for
missing data in the same step and phase (Prometheus refusing, after an earlier hold for
missing series) got the first hold's key, so the API server answered 409 and the Event that
named the new cause was never recorded."""

from __future__ import annotations

from datetime import timedelta

from controller.rollout.machine import Judgement, with_event_records
from controller.rollout.state import RolloutState
from tests.rollout.test_machine import MISSING, POLICY, T0, canary_obs, decide, progressing

REFUSED = Judgement("continue", "query failed: cannot connect to Prometheus", missing=True)


def _commit(state: RolloutState, judgement: Judgement, minutes: int) -> RolloutState:
    result = with_event_records(decide(state, "p", POLICY, canary_obs(10),
                                       T0 + timedelta(minutes=minutes), judgement=judgement))
    assert result.state is not None
    return result.state


def test_a_second_hold_in_the_same_step_with_another_cause_gets_its_own_event() -> None:
    first = _commit(progressing(), MISSING, 3)
    cleared = _commit(first, Judgement("continue", "data again", changed=True), 4)
    assert cleared.missing_since is None and cleared.phase_since == first.phase_since
    second = _commit(cleared, REFUSED, 5)
    (hold_1,), (hold_2,) = first.last_events, second.last_events
    assert hold_1.reason == hold_2.reason == "MetricsMissing"
    assert "cannot connect" in hold_2.message
    assert hold_1.key != hold_2.key


def test_the_same_transition_always_gets_the_same_key() -> None:
    again = [_commit(progressing(), MISSING, 3).last_events for _ in range(2)]
    assert again[0] == again[1] and len(again[0]) == 1
