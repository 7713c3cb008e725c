"""Shared pieces of the Slack tests: a policy with an approval step, a rollout driven
through the real state machine, a managed InferenceService, and fast delivery knobs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.kube.annotations import POLICY_ANNOTATION, STATE_ANNOTATION
from controller.notifications.slack import Delivery, SlackNotifier, make_client
from controller.policy.loader import load_text
from controller.policy.model import RolloutPolicy
from controller.rollout.machine import Judgement, Result, decide
from controller.rollout.snapshot import RolloutSnapshot
from controller.rollout.state import Command, Observation, RolloutState, TrafficTarget
from controller.routers.kserve_knative import KNATIVE
from simulations.slack import SlackSim
from tests.fakes import sealed_state

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
APPROVER = "U012AB3CD"
GROUP = "S0614TZR7"
GROUP_MEMBER = "U0GROUP01"
OUTSIDER = "U0STRANGER"
TEAM = "T0SIM0001"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-111-222-notarealtokenbutsecret"
NAMESPACE, NAME = "models", "churn"

POLICY_YAML = """
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: careful}
spec:
  steps:
    - weight: 10
    - weight: 25
      pause: {approval: {timeout: 8h}}
    - weight: 50
    - weight: 100
  stepDefaults: {minDuration: 2m, minRequests: 10}
  analysis:
    checks: [{name: errors, kind: ratio}]
%(extra)s
"""
APPROVERS = f"  approvers: {{slackUsers: [{APPROVER}], slackUserGroups: [{GROUP}]}}"


def policy(events: Sequence[str] | None = None, *, channel: str | None = "#ml-rollouts",
           approvers: bool = True) -> RolloutPolicy:
    extra = [APPROVERS] if approvers else []
    if channel is not None:
        listed = "" if events is None else f", events: [{', '.join(events)}]"
        extra.append(f"  notifications:\n    slack: {{channel: '{channel}'{listed}}}")
    return load_text(POLICY_YAML % {"extra": "\n".join(extra)}, "careful.yaml")[0].policy


def observed(percent: int | None, *, spec: str = "h2", created: str = "churn-00002",
             ready: str | None = "churn-00002", rolled_out: str = "churn-00001",
             canary_share: int | None = None) -> Observation:
    """What KServe reports: the canary (if ready) gets ``percent`` of the traffic."""
    share = percent if canary_share is None else canary_share
    traffic: tuple[TrafficTarget, ...]
    if ready is None or ready == rolled_out or share is None:
        traffic = (TrafficTarget(rolled_out, 100, latest=True),)
    else:
        traffic = (TrafficTarget(ready, share, latest=True),
                   TrafficTarget(rolled_out, 100 - share, tag="prev"))
    return Observation(spec_hash=spec, storage_uri=f"s3://models/churn/{spec}",
                       canary_percent=percent, latest_created=created, latest_ready=ready,
                       latest_rolled_out=rolled_out, traffic=traffic)


PASS = Judgement("pass", "error rate 0.40% (8/2000) vs stable 0.45% (9/2000): no regression")
FAIL = Judgement("fail", "error rate 2.10% (42/2000) vs stable 0.40% (8/2000), margin 25%")


@dataclass
class Rollout:
    """A rollout driven through the real state machine; ``snapshots`` is what the
    reconciler would hand the notifier (one per committed change)."""

    spec: RolloutPolicy
    now: datetime = T0
    state: RolloutState | None = None
    snapshots: list[RolloutSnapshot] = field(default_factory=list)

    def tick(self, obs: Observation, *, minutes: float = 0, judgement: Judgement | None = None,
             commands: Sequence[Command] = ()) -> Result:
        self.now += timedelta(minutes=minutes)
        result = decide(self.state, self.spec.name, self.spec.spec, obs, self.now,
                        judgement=judgement, commands=commands, router=KNATIVE)
        if result.state is not None and (result.state != self.state or result.events):
            self.snapshots.append(RolloutSnapshot(
                NAMESPACE, NAME, "uid-1", self.spec.name, result.state,
                "http://churn.models.example.com", result.events))
        self.state = result.state
        return result

    @property
    def current(self) -> RolloutState:
        assert self.state is not None
        return self.state

    def to_approval(self) -> Rollout:
        """Adopt v1, deploy v2, pass step 1 (10%) and step 2 (25%): paused for approval."""
        self.tick(observed(None, spec="h1", created="churn-00001", ready="churn-00001"))
        self.snapshots.clear()                          # adoption is not a rollout
        self.tick(observed(10, created="churn-00001", ready="churn-00001"), minutes=1)
        self.tick(observed(10, ready="churn-00001"), minutes=1)
        self.tick(observed(10), minutes=1)                         # ready: step 1 at 10%
        self.tick(observed(10), minutes=3, judgement=PASS)         # step 1 passed -> 25%
        self.tick(observed(25), minutes=3, judgement=PASS)         # step 2 passed -> approval
        return self

    def approve(self, by: str = f"{APPROVER} (alice)", command_id: str = "c-approve") -> None:
        command = Command(command_id, "approve", by, self.now, via="slack",
                          rollout=self.current.id, step=self.current.step)
        self.tick(observed(25), minutes=1, commands=[command])

    def abort(self, by: str = f"{APPROVER} (alice)") -> None:
        command = Command("c-abort", "abort", by, self.now, via="slack", rollout=self.current.id)
        self.tick(observed(25), minutes=1, commands=[command])
        self.tick(observed(0, canary_share=0), minutes=1)

    def promote(self) -> None:
        self.tick(observed(50), minutes=3, judgement=PASS)         # step 3 passed -> promoting
        self.tick(observed(None, rolled_out="churn-00002"), minutes=1)   # KServe confirms

    def fail(self) -> None:
        self.tick(observed(25), minutes=1, judgement=FAIL)
        self.tick(observed(0, canary_share=0), minutes=1)


def isvc(state: RolloutState | None, policy_name: str = "careful",
         extra: dict[str, str] | None = None) -> dict[str, Any]:
    """A managed InferenceService as FakeObjects keeps it."""
    annotations = {POLICY_ANNOTATION: policy_name, **(extra or {})}
    if state is not None:
        annotations[STATE_ANNOTATION] = sealed_state(state, "uid-1")
    return {"metadata": {"namespace": NAMESPACE, "name": NAME, "uid": "uid-1",
                         "resourceVersion": "7", "annotations": annotations},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                             "storageUri": "s3://models/churn/h2"},
                                   "canaryTrafficPercent": 25}}}


FAST = Delivery(backoff_base=0.02, backoff_cap=0.1, max_attempts=3, channel_interval=0.0,
                inline_rate_limit_wait=5.0, auth_cooldown=60.0, timeout=2)


@pytest.fixture
def sim() -> Iterator[SlackSim]:
    with SlackSim(bot_token=BOT_TOKEN, team_id=TEAM,
                  usergroups={GROUP: [GROUP_MEMBER, "U0OTHER01"]}) as server:
        yield server


def notifier_for(sim: SlackSim, spec: RolloutPolicy | None, *,
                 delivery: Delivery = FAST, api_url: str | None = None,
                 registry: CollectorRegistry | None = None, **kwargs: Any) -> SlackNotifier:
    client = make_client(BOT_TOKEN, api_url or sim.api_url, timeout=delivery.timeout,
                         max_rate_limit_wait=delivery.inline_rate_limit_wait)
    notifier = SlackNotifier(client, lambda name: spec if spec and name == spec.name else None,
                             registry or CollectorRegistry(), delivery=delivery, **kwargs)
    notifier.start()                                # as the daemon does, before any rollout
    return notifier


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value
