"""POST /slack/interactions: every rejection answers the right status and leaves the
InferenceService alone; a valid signed click writes one command, and a replay none."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier

from controller.kube.annotations import COMMANDS_ANNOTATION, read_commands
from controller.kube.fakes import FakeObjects
from controller.logs import configure_logging
from controller.notifications.interactions import SlackInteractions
from controller.notifications.slack import ACTION_APPROVE, ACTION_ROLLBACK, make_client
from controller.rollout.machine import decide
from controller.rollout.state import Phase, RolloutState
from controller.routers.kserve_knative import KNATIVE
from controller.server import HttpServer, Request
from controller.settings import SlackSettings
from simulations.slack import (
    SlackSim,
    block_actions_payload,
    interaction_body,
    signature_headers,
    signed_interaction,
)
from tests.fakes import TEST_SEALER
from tests.slack.slack_helpers import (
    APPROVER,
    BOT_TOKEN,
    GROUP_MEMBER,
    NAME,
    NAMESPACE,
    OUTSIDER,
    SIGNING_SECRET,
    TEAM,
    Rollout,
    isvc,
    observed,
    policy,
    sim,
)

__all__ = ["sim"]   # the fixture


@dataclass
class World:
    """A managed InferenceService paused for approval, the handler, and a log capture."""

    sim: SlackSim
    rollout: Rollout
    isvcs: FakeObjects
    handler: SlackInteractions
    logs: io.StringIO

    @property
    def state(self) -> RolloutState:
        return self.rollout.current

    @property
    def now(self) -> int:
        return int(self.rollout.now.timestamp())

    def annotations(self) -> Mapping[str, str]:
        return dict(self.isvcs.objects[(NAMESPACE, NAME)]["metadata"]["annotations"])

    def commands(self) -> list[Any]:
        """The commands waiting, as the controller reads them: sealed by the handler."""
        pending, refused = read_commands(self.annotations().get(COMMANDS_ANNOTATION),
                                         TEST_SEALER, "uid-1")
        assert refused == []
        return [p.command for p in pending]

    def payload(self, *, action_id: str = ACTION_APPROVE, user: str = APPROVER,
                user_name: str = "alice", team: str = TEAM, step: int | None = None,
                rollout: str | None = None, action_ts: str = "1772442600.000100",
                **value_changes: Any) -> dict[str, Any]:
        value = {"namespace": NAMESPACE, "name": NAME, "rollout": rollout or self.state.id,
                 "step": self.state.step if step is None else step, **value_changes}
        return block_actions_payload(action_id=action_id, value=json.dumps(value),
                                     response_url=self.sim.response_url("click"),
                                     user_id=user, user_name=user_name, team_id=team,
                                     action_ts=action_ts)

    def request(self, payload: Mapping[str, Any] | None = None, *, secret: str = SIGNING_SECRET,
                timestamp: int | None = None, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Request:
        """A request signed as Slack signs it (``body`` / ``headers`` override parts)."""
        signed_body, signed_headers = signed_interaction(
            secret, payload if payload is not None else self.payload(),
            self.now if timestamp is None else timestamp)
        return Request("POST", "/slack/interactions",
                       dict(headers if headers is not None else signed_headers),
                       signed_body if body is None else body)

    def ephemeral(self) -> list[str]:
        return [body["text"] for _, body in self.sim.responses
                if body.get("response_type") == "ephemeral"]


@pytest.fixture
def world(sim: SlackSim) -> Iterator[World]:
    logs = io.StringIO()
    configure_logging("json", "info", stream=logs)
    spec = policy()
    rollout = Rollout(spec).to_approval()
    assert rollout.current.phase == Phase.PAUSED
    isvcs = FakeObjects(isvc(rollout.current), commands_webhook=TEST_SEALER)
    handler = SlackInteractions(
        SIGNING_SECRET, lambda name: spec if name == spec.name else None, isvcs,
        make_client(BOT_TOKEN, sim.api_url), lambda: rollout.now, sealer=TEST_SEALER, team_id=TEAM,
        response_urls=(f"http://127.0.0.1:{sim.port}/response/",))
    yield World(sim, rollout, isvcs, handler, logs)
    handler.close()
    out = logs.getvalue()
    for secret in (SIGNING_SECRET, BOT_TOKEN, sim.response_url("click")):
        assert secret not in out, "a secret reached the logs"


def assert_untouched(world: World, before: Mapping[str, str]) -> None:
    assert world.isvcs.patches == []
    assert world.annotations() == before


# --- rejections: status, and nothing changes -----------------------------------------------


def forged(w: World) -> Request:
    return w.request(secret="not-the-signing-secret")


def tampered(w: World) -> Request:
    good = w.request()
    other = interaction_body(w.payload(user="U0EVE0001"))
    return Request(good.method, good.path, good.headers, other)


def stale(w: World) -> Request:
    return w.request(timestamp=w.now - 301)


def future(w: World) -> Request:
    return w.request(timestamp=w.now + 301)


def unsigned(w: World) -> Request:
    return w.request(headers={"Content-Type": "application/x-www-form-urlencoded"})


def bad_timestamp(w: World) -> Request:
    good = w.request()
    return Request(good.method, good.path, {**good.headers, "X-Slack-Request-Timestamp": "soon"},
                   good.body)


def wrong_team(w: World) -> Request:
    return w.request(w.payload(team="T0OTHER01"))


def unknown_action(w: World) -> Request:
    return w.request(w.payload(action_id="rollwise_delete_everything"))


def oversized(w: World) -> Request:
    payload = w.payload()
    payload["padding"] = "x" * (64 * 1024)
    return w.request(payload)


def signed_raw(w: World, body: bytes) -> Request:
    return Request("POST", "/slack/interactions", signature_headers(SIGNING_SECRET, body, w.now),
                   body)


def not_a_form(w: World) -> Request:
    return signed_raw(w, b'{"type": "block_actions"}')


def payload_not_json(w: World) -> Request:
    return signed_raw(w, b"payload=%7Bnot+json")


def payload_not_an_object(w: World) -> Request:
    return w.request("[1, 2, 3]")         # type: ignore[arg-type]


def two_payloads(w: World) -> Request:
    body = interaction_body(w.payload())
    return signed_raw(w, body + b"&" + body)


def not_utf8(w: World) -> Request:
    return signed_raw(w, b"payload=\xff\xfe")


def value_not_json(w: World) -> Request:
    payload = w.payload()
    payload["actions"][0]["value"] = "approve please"
    return w.request(payload)


def value_step_not_a_number(w: World) -> Request:
    return w.request(w.payload(step="1"))  # type: ignore[arg-type]


def not_block_actions(w: World) -> Request:
    payload = w.payload()
    payload["type"] = "view_submission"
    return w.request(payload)


def no_user(w: World) -> Request:
    payload = w.payload()
    del payload["user"]
    return w.request(payload)


REJECTIONS: dict[str, tuple[Callable[[World], Request], int]] = {
    "forged-signature": (forged, 401),
    "body-changed-after-signing": (tampered, 401),
    "stale-timestamp": (stale, 401),
    "timestamp-from-the-future": (future, 401),
    "no-signature-headers": (unsigned, 401),
    "timestamp-not-a-number": (bad_timestamp, 401),
    "wrong-team": (wrong_team, 403),
    "unknown-action-id": (unknown_action, 400),
    "oversized-body": (oversized, 400),
    "body-not-a-form": (not_a_form, 400),
    "payload-not-json": (payload_not_json, 400),
    "payload-not-an-object": (payload_not_an_object, 400),
    "two-payload-fields": (two_payloads, 400),
    "body-not-utf8-cannot-be-verified": (not_utf8, 401),
    "button-value-not-json": (value_not_json, 400),
    "button-step-not-a-number": (value_step_not_a_number, 400),
    "not-block-actions": (not_block_actions, 400),
    "payload-without-user": (no_user, 400),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_requests_change_nothing(world: World, case: str) -> None:
    build, status = REJECTIONS[case]
    before = world.annotations()
    response = world.handler.handle(build(world))
    assert response.status == status, response.body
    assert_untouched(world, before)
    assert world.sim.calls == []                    # no reply to a request we do not trust
    logged = [json.loads(line) for line in world.logs.getvalue().splitlines()]
    assert [r["status"] for r in logged if r["event"] == "slack interaction rejected"] == [
        status]


def test_a_non_approver_gets_an_ephemeral_why_not(world: World) -> None:
    before = world.annotations()
    response = world.handler.handle(world.request(world.payload(user=OUTSIDER,
                                                                user_name="mallory")))
    assert response.status == 200
    assert_untouched(world, before)
    [reply] = world.ephemeral()
    assert "not an approver" in reply
    assert [key for key, _ in world.sim.responses] == ["click"]


def test_the_policy_without_slack_approvers_lets_nobody_click(world: World) -> None:
    spec = policy(approvers=False)
    world.handler.policies = lambda name: spec
    before = world.annotations()
    assert world.handler.handle(world.request()).status == 200
    assert_untouched(world, before)
    assert "no Slack approvers" in world.ephemeral()[0]


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED,
                                   Phase.ROLLING_BACK, Phase.PROGRESSING])
def test_a_rollout_that_is_no_longer_waiting_is_left_alone(world: World, phase: Phase) -> None:
    obj = world.isvcs.objects[(NAMESPACE, NAME)]
    obj["metadata"]["annotations"] = isvc(world.state.evolve(phase=phase, pause=None))[
        "metadata"]["annotations"]
    before = world.annotations()
    assert world.handler.handle(world.request()).status == 200
    assert_untouched(world, before)
    [reply] = world.ephemeral()
    assert "no longer waiting" in reply


@pytest.mark.parametrize("change", [{"step": 0}, {"rollout": "h2-0"}])
def test_a_click_for_another_step_or_rollout_is_left_alone(world: World,
                                                           change: dict[str, Any]) -> None:
    before = world.annotations()
    assert world.handler.handle(world.request(world.payload(**change))).status == 200
    assert_untouched(world, before)
    assert "no longer waiting" in world.ephemeral()[0]


def test_a_click_on_a_deleted_inference_service_is_left_alone(world: World) -> None:
    world.isvcs.objects.clear()
    assert world.handler.handle(world.request()).status == 200
    assert world.isvcs.patches == []
    assert "no longer" in world.ephemeral()[0]


# --- the click that counts -------------------------------------------------------------


def test_a_valid_click_writes_exactly_one_command_and_a_replay_none(world: World) -> None:
    request = world.request()
    response = world.handler.handle(request)
    assert response.status == 200 and response.body == b""
    [command] = world.commands()
    assert len(world.isvcs.patches) == 1
    assert (command.action, command.step, command.via, command.rollout) == (
        "approve", world.state.step, "slack", world.state.id)
    assert command.by == f"{APPROVER} (alice)"
    assert "Recorded" in world.ephemeral()[0]

    assert world.handler.handle(request).status == 200          # the same request again
    double = world.request(world.payload(action_ts="1772442600.000900"))   # a double click
    assert world.handler.handle(double).status == 200
    assert len(world.isvcs.patches) == 1
    assert [c.id for c in world.commands()] == [command.id]


def test_the_command_id_is_deterministic(world: World) -> None:
    world.handler.handle(world.request())
    first = world.commands()[0].id
    other_world = FakeObjects(isvc(world.state), commands_webhook=TEST_SEALER)
    world.handler.isvcs = other_world
    world.handler.handle(world.request())
    [again] = read_commands(other_world.objects[(NAMESPACE, NAME)]["metadata"]["annotations"]
                            [COMMANDS_ANNOTATION])[0]
    assert again.command.id == first


def test_the_state_machine_acts_on_the_command_once(world: World) -> None:
    world.handler.handle(world.request())
    commands = world.commands()
    result = decide(world.state, "careful", world.rollout.spec.spec, observed(25),
                    world.rollout.now, commands=commands, router=KNATIVE)
    assert result.state is not None and result.state.phase == Phase.PROGRESSING
    assert result.state.step == 2 and result.state.approvals[-1].via == "slack"
    # the controller's patch: new state, command consumed
    world.isvcs.objects[(NAMESPACE, NAME)]["metadata"]["annotations"] = isvc(result.state)[
        "metadata"]["annotations"]
    patches = len(world.isvcs.patches)
    world.handler.handle(world.request())           # Slack retries the old request
    assert len(world.isvcs.patches) == patches
    assert "no longer waiting" in world.ephemeral()[-1]


def test_roll_back_writes_an_abort(world: World) -> None:
    assert world.handler.handle(world.request(world.payload(action_id=ACTION_ROLLBACK))
                                ).status == 200
    [command] = world.commands()
    assert (command.action, command.by, command.via) == ("abort", f"{APPROVER} (alice)",
                                                         "slack")


def test_a_user_group_member_may_approve_and_the_group_is_cached(world: World) -> None:
    assert world.handler.handle(world.request(world.payload(user=GROUP_MEMBER,
                                                            user_name="bob"))).status == 200
    assert world.commands()[0].by == f"{GROUP_MEMBER} (bob)"
    world.handler.handle(world.request(world.payload(user=OUTSIDER)))
    assert len(world.sim.calls_to("usergroups.users.list")) == 1   # cached
    world.rollout.now += timedelta(minutes=6)
    world.handler.handle(world.request(world.payload(user=OUTSIDER)))
    assert len(world.sim.calls_to("usergroups.users.list")) == 2   # expired


def test_group_lookup_failure_refuses_and_says_so(world: World) -> None:
    world.sim.fail(500)
    before = world.annotations()
    world.handler.handle(world.request(world.payload(user=GROUP_MEMBER)))
    assert_untouched(world, before)
    world.sim.fail(None)
    assert "Could not check the approver groups" in world.ephemeral()[0]


def test_without_a_response_url_the_reply_is_chat_post_ephemeral(world: World) -> None:
    payload = world.payload(user=OUTSIDER)
    del payload["response_url"]
    world.handler.handle(world.request(payload))
    [reply] = world.sim.ephemeral
    assert (reply["channel"], reply["user"]) == ("C0SIM0001", OUTSIDER)


def test_a_response_url_outside_slack_is_not_called(world: World) -> None:
    world.handler.response_urls = ("https://hooks.slack.com/",)
    world.handler.handle(world.request(world.payload(user=OUTSIDER)))
    assert world.sim.responses == []
    assert len(world.sim.ephemeral) == 1            # answered through the Web API instead


class SlowServices(FakeObjects):
    def __init__(self, *objects: dict[str, Any]) -> None:
        super().__init__(*objects)
        self.release = threading.Event()

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.release.wait(5)
        return super().get(namespace, name)


def test_the_answer_comes_within_the_ack_budget_even_when_kubernetes_is_slow(
        world: World) -> None:
    slow = SlowServices(isvc(world.state))
    world.handler.isvcs = slow
    world.handler.ack_seconds = 0.2
    started = time.monotonic()
    response = world.handler.handle(world.request())
    assert response.status == 200 and time.monotonic() - started < 1.0
    assert slow.patches == []
    slow.release.set()
    deadline = time.monotonic() + 5
    while not slow.patches and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(slow.patches) == 1                   # finished on the worker


def test_the_route_works_through_the_controllers_http_server(world: World) -> None:
    server = HttpServer("127.0.0.1:0", {("POST", "/slack/interactions"): world.handler.handle})
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/slack/interactions"
        good, forged_request = world.request(), forged(world)
        for request, status in ((forged_request, 401), (good, 200)):
            sent = urllib.request.Request(url, data=request.body, headers=dict(request.headers),
                                          method="POST")
            try:
                with urllib.request.urlopen(sent, timeout=5) as answer:
                    assert answer.status == status
            except urllib.error.HTTPError as err:
                assert err.code == status
    finally:
        server.stop()
    assert len(world.commands()) == 1


def test_the_simulated_signature_is_slack_sdks() -> None:
    body = interaction_body({"type": "block_actions", "text": "héllo"})
    expected = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp="1700000000",
                                                                     body=body)
    assert signature_headers(SIGNING_SECRET, body, 1700000000)["X-Slack-Signature"] == expected


def test_from_settings_needs_a_signing_secret_or_an_app_token(world: World) -> None:
    isvcs = FakeObjects(commands_webhook=TEST_SEALER)
    assert SlackInteractions.from_settings(SlackSettings(), lambda _: None, isvcs,
                                           sealer=TEST_SEALER) is None
    handler = SlackInteractions.from_settings(
        SlackSettings(signing_secret=SecretStr(SIGNING_SECRET), api_url=world.sim.api_url),
        lambda _: None, isvcs, sealer=TEST_SEALER, team_id=TEAM,
        clock=lambda: world.rollout.now)
    assert handler is not None
    assert handler.handle(world.request()).status == 200   # verified (then: gone, 200)
    handler.close()
    socket_only = SlackInteractions.from_settings(
        SlackSettings(app_token=SecretStr("xapp-1-secret"), api_url=world.sim.api_url),
        lambda _: None, isvcs, sealer=TEST_SEALER, clock=lambda: world.rollout.now)
    assert socket_only is not None
    assert socket_only.handle(world.request()).status == 401  # HTTP cannot be verified
    socket_only.close()
