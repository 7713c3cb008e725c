"""People in the loop, end to end: a rollout pauses at 50%, is approved by a signed Slack
click and promoted; the same approval from the CLI; pause, resume and abort from the CLI;
and, from the API server's audit log, the shipped RBAC grants exactly what was used."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from controller.cli import main
from controller.notifications.slack import ACTION_APPROVE
from controller.rollout.state import Phase
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.slack import SlackSim, block_actions_payload, signed_interaction
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import (
    DEPLOYMENT_ONLY_GRANTS,
    GOOD,
    NAMESPACE,
    STANDARD_ONLY_GRANTS,
    deploy,
    event_reasons,
    finished,
    rbac_grants,
    state_of,
    wait_for,
)

pytestmark = pytest.mark.e2e

SECRET = "e2e-signing-secret"
APPROVER = "U0APPROVE1"
POLICY = f"""\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: human}}
spec:
  steps:
    - {{weight: 10}}
    - weight: 50
      pause: {{approval: {{timeout: 10m}}}}
    - {{weight: 100}}
  stepDefaults: {{minDuration: 6s, minRequests: 100}}
  readyTimeout: 20s
  analysis:
    interval: 3s
    warmup: {{duration: 6s}}
    checks: [{{name: error-rate, kind: ratio, tolerance: 0.5, maxRate: 0.05}}]
  approvers: {{slackUsers: [{APPROVER}], kubernetesUsers: [rollwise-admin]}}
  notifications: {{slack: {{channel: "#ml-rollouts"}}}}
"""


@dataclass
class Env:
    world: World
    slack: SlackSim
    controller: ControllerProcess

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--kubeconfig",
                                           str(self.world.cluster.admin_kubeconfig)])
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture(scope="module")
def env(kube_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("humans")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "human.yaml").write_text(POLICY)
    with World(WorldConfig(default_behaviour=GOOD, ready_delay=1.0, seed=3),
               binaries=kube_binaries) as world, SlackSim() as slack:
        env_vars = {
            "ROLLWISE_SLACK__BOT_TOKEN": slack.bot_token,
            "ROLLWISE_SLACK__SIGNING_SECRET": SECRET,
            "ROLLWISE_SLACK__API_URL": slack.api_url,
            "ROLLWISE_SLACK__TEAM_ID": slack.team_id,
            "ROLLWISE_SLACK__RESPONSE_URL_PREFIXES": json.dumps([slack.response_url("")]),
        }
        with ControllerProcess(world, tmp / "policies", tmp / "controller.log",
                               env=env_vars) as controller:
            yield Env(world, slack, controller)


def _start(env: Env, name: str) -> None:
    env.world.create_isvc(NAMESPACE, name, f"s3://m/{name}/v1", policy="human")
    wait_for(lambda: (s := state_of(env.world, name)) is not None and s.phase == "Succeeded",
             60, f"{name} adopted", env.controller.tail)
    env.world.start_traffic(NAMESPACE, name, 80, max_seconds=150)


def _waiting_for_approval(env: Env, name: str) -> None:
    wait_for(lambda: (s := state_of(env.world, name)) is not None and s.phase == Phase.PAUSED
             and s.pause is not None and s.pause.reason == "approval", 120,
             f"{name} to wait for approval at 50%", env.controller.tail)


def _approve_button(env: Env, rollout: str) -> tuple[str, str, str]:
    """(channel, message ts, button value) of the rollout's Approve button in Slack."""
    def find() -> tuple[str, str, str] | None:
        for message in env.slack.top_level():
            for block in message.blocks:
                for element in block.get("elements", []) if isinstance(block, dict) else []:
                    if element.get("action_id") == ACTION_APPROVE and rollout in \
                            element.get("value", ""):
                        return message.channel, message.ts, element["value"]
        return None
    found: tuple[str, str, str] = wait_for(find, 30, "the Approve button in Slack",
                                           env.controller.tail)
    return found


def test_paused_at_50_approved_by_a_signed_slack_click_then_promoted(env: Env) -> None:
    _start(env, "slack-approved")
    deploy(env.world, "slack-approved", "s3://m/slack-approved/v2")
    _waiting_for_approval(env, "slack-approved")
    state = state_of(env.world, "slack-approved")
    assert state is not None and env.world.get_isvc(NAMESPACE, "slack-approved")["spec"][
        "predictor"]["canaryTrafficPercent"] == 50
    channel, ts, value = _approve_button(env, state.id)
    payload = block_actions_payload(action_id=ACTION_APPROVE, value=value,
                                    response_url=env.slack.response_url("click"),
                                    user_id=APPROVER, user_name="alice",
                                    team_id=env.slack.team_id, channel_id=channel,
                                    message_ts=ts, action_ts=f"{time.time():.6f}")
    body, headers = signed_interaction(SECRET, payload, int(time.time()))
    url = f"{env.controller.slack_url}/slack/interactions"
    assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
    # A replay (a double click) acts once; a forged copy is refused.
    assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
    forged = dict(headers, **{"X-Slack-Signature": "v0=" + "0" * 64})
    assert requests.post(url, data=body, headers=forged, timeout=5).status_code == 401
    done = wait_for(lambda: finished(env.world, "slack-approved", "s3://m/slack-approved/v2"),
                    90, "promotion after the approval", env.controller.tail)
    assert done.phase == Phase.SUCCEEDED
    assert [(a.by.split()[0], a.via) for a in done.approvals] == [(APPROVER, "slack")]
    final = wait_for(lambda: next((m for m in env.slack.top_level()
                                   if m.ts == ts and "Promoted" in m.text), None), 30,
                     "the Slack message to show the promotion", env.controller.tail)
    assert not any(e.get("action_id") == ACTION_APPROVE for b in final.blocks
                   if isinstance(b, dict) for e in b.get("elements", []))


def test_the_same_approval_from_the_cli_also_updates_slack(env: Env) -> None:
    _start(env, "cli-approved")
    out = env.cli("deploy", f"{NAMESPACE}/cli-approved", "--storage-uri",
                  "s3://m/cli-approved/v2")
    assert "held at 0%" in out
    _waiting_for_approval(env, "cli-approved")
    rows = json.loads(env.cli("status", "-n", NAMESPACE, "cli-approved", "-o", "json"))
    assert rows[0]["phase"] == "Paused" and rows[0]["pause"] == "approval"
    assert rows[0]["canaryPercent"] == 50
    # Someone who may write the annotation but is not an approver: refused, not obeyed.
    intruder = CliRunner().invoke(main, ["approve", f"{NAMESPACE}/cli-approved", "--kubeconfig",
                                         str(env.world.cluster.controller_kubeconfig)])
    assert intruder.exit_code == 0, intruder.output
    wait_for(lambda: "CommandRefused" in event_reasons(env.world, "cli-approved"), 30,
             "the non-approver's approval to be refused", env.controller.tail)
    state = state_of(env.world, "cli-approved")
    assert state is not None and state.phase == Phase.PAUSED
    out = env.cli("approve", f"{NAMESPACE}/cli-approved", "--reason", "looks good")
    assert "as rollwise-admin" in out     # the user the API server authenticated
    done = wait_for(lambda: finished(env.world, "cli-approved", "s3://m/cli-approved/v2"),
                    90, "promotion after the CLI approval", env.controller.tail)
    assert done.phase == Phase.SUCCEEDED
    assert [(a.by, a.via) for a in done.approvals] == [("rollwise-admin", "kubernetes")]
    wait_for(lambda: any("approved by rollwise-admin via kubernetes" in json.dumps(m.blocks)
                         for m in env.slack.top_level()), 30,
             "the Slack message to show the CLI approval", env.controller.tail)


def test_pause_resume_and_abort_from_the_cli(env: Env) -> None:
    _start(env, "operated")
    deploy(env.world, "operated", "s3://m/operated/v2")
    wait_for(lambda: (s := state_of(env.world, "operated")) is not None
             and s.phase == Phase.PROGRESSING, 60, "progressing", env.controller.tail)
    env.cli("pause", f"{NAMESPACE}/operated")
    wait_for(lambda: (s := state_of(env.world, "operated")) is not None and s.pause is not None
             and s.pause.reason == "operator", 30, "an operator pause", env.controller.tail)
    env.cli("resume", f"{NAMESPACE}/operated")
    wait_for(lambda: (s := state_of(env.world, "operated")) is not None
             and s.phase == Phase.PROGRESSING, 30, "resumed", env.controller.tail)
    env.cli("abort", f"{NAMESPACE}/operated", "--reason", "e2e")
    done = wait_for(lambda: finished(env.world, "operated", "s3://m/operated/v2"), 60,
                    "the abort", env.controller.tail)
    assert done.phase == Phase.ABORTED and "aborted by" in (
        done.last_decision.reason if done.last_decision else "")
    status = env.world.get_isvc(NAMESPACE, "operated")["status"]["components"]["predictor"]
    assert {t["revisionName"] for t in status["traffic"] if t["percent"]} == {
        "operated-predictor-00001"}


def test_a_command_is_recorded_as_the_user_the_api_server_authenticated(env: Env) -> None:
    """Issue 14, defect 3, on the real API server: an entry claiming to be a Slack
    approval, written with kubectl, is stamped by the commands webhook with its real
    writer; a command on a new object is refused outright."""
    env.world.create_isvc(NAMESPACE, "claims", "s3://m/claims/v1", policy="human")
    forged = [{"id": "forged-1", "action": "pause", "by": "U012AB3CD (alice)", "via": "slack",
               "at": "2026-01-01T00:00:00+00:00"}]
    env.world.patch_isvc(NAMESPACE, "claims", {"metadata": {"annotations": {
        "rollwise.io/commands": json.dumps(forged)}}})
    annotations = env.world.get_isvc(NAMESPACE, "claims")["metadata"]["annotations"]
    [entry] = json.loads(annotations["rollwise.io/commands"])
    assert (entry["by"], entry["via"]) == ("rollwise-admin", "kubernetes")
    assert "system:masters" in entry["groups"] and entry["seal"]
    with pytest.raises(ApiException) as refused:
        env.world.create_isvc(NAMESPACE, "born-with-commands", "s3://m/x/v1", policy="human",
                              annotations={"rollwise.io/commands": json.dumps(forged)})
    assert "existing InferenceService" in str(refused.value.body)


def test_the_rbac_grants_exactly_what_the_controller_used(env: Env) -> None:
    """From the audit log: no request was forbidden, and every granted verb was used (the
    Standard-mode router's own grants by test_standard_e2e, the Deployment router's by
    test_deployment_e2e)."""
    calls = env.world.controller_api_calls()
    assert not [c for c in calls if c[3] == 403], sorted(calls)
    used = {(verb, group, resource) for verb, group, resource, _ in calls}
    unused = rbac_grants() - used - STANDARD_ONLY_GRANTS - DEPLOYMENT_ONLY_GRANTS
    assert not unused, f"deploy/rbac grants what the controller never used: {sorted(unused)}"
