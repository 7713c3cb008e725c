"""Socket Mode: envelopes are acknowledged first and end in the same decision code as the
HTTP route (no signature: the socket authenticates Slack; every other check applies)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from controller.kube.annotations import COMMANDS_ANNOTATION, read_commands
from controller.kube.fakes import FakeObjects
from controller.logs import configure_logging
from controller.notifications.interactions import SlackInteractions
from controller.notifications.slack import ACTION_APPROVE, make_client
from controller.notifications.socket_mode import SocketModeInteractions
from controller.settings import SlackSettings
from simulations.slack import SlackSim, block_actions_payload
from tests.fakes import TEST_SEALER
from tests.slack.slack_helpers import (
    APPROVER,
    BOT_TOKEN,
    NAME,
    NAMESPACE,
    OUTSIDER,
    SIGNING_SECRET,
    TEAM,
    Rollout,
    isvc,
    policy,
    sim,
)

__all__ = ["sim"]   # the fixture


class FakeSocketClient:
    """Records acknowledgements, as SocketModeClient would send them over the socket."""

    def __init__(self) -> None:
        self.socket_mode_request_listeners: list[Any] = []
        self.acks: list[SocketModeResponse] = []
        self.connected = False

    def send_socket_mode_response(self, response: SocketModeResponse) -> None:
        self.acks.append(response)

    def connect(self) -> None:
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def deliver(self, request: SocketModeRequest) -> None:
        for listener in self.socket_mode_request_listeners:
            listener(self, request)


def approval_handler(sim: SlackSim) -> tuple[SlackInteractions, FakeObjects, Rollout]:
    """The interactions handler on a rollout waiting for approval, talking to ``sim``."""
    spec = policy()
    rollout = Rollout(spec).to_approval()
    isvcs = FakeObjects(isvc(rollout.current), commands_webhook=TEST_SEALER)
    handler = SlackInteractions(SIGNING_SECRET, lambda name: spec, isvcs,
                                make_client(BOT_TOKEN, sim.api_url), lambda: rollout.now,
                                sealer=TEST_SEALER, team_id=TEAM,
                                response_urls=(f"http://127.0.0.1:{sim.port}/response/",))
    return handler, isvcs, rollout


@pytest.fixture
def parts(sim: SlackSim) -> Iterator[tuple[FakeSocketClient, FakeObjects, Rollout]]:
    handler, isvcs, rollout = approval_handler(sim)
    client = FakeSocketClient()
    bridge = SocketModeInteractions(client, handler)
    bridge.start()
    assert client.connected
    yield client, isvcs, rollout
    bridge.close()
    handler.close()


def click(sim: SlackSim, rollout: Rollout, *, user: str = APPROVER,
          team: str = TEAM) -> dict[str, Any]:
    value = json.dumps({"namespace": NAMESPACE, "name": NAME, "rollout": rollout.current.id,
                        "step": rollout.current.step})
    return block_actions_payload(action_id=ACTION_APPROVE, value=value, user_id=user,
                                 team_id=team, response_url=sim.response_url("sock"))


def commands(isvcs: FakeObjects) -> list[Any]:
    annotations = isvcs.objects[(NAMESPACE, NAME)]["metadata"]["annotations"]
    pending, refused = read_commands(annotations.get(COMMANDS_ANNOTATION), TEST_SEALER, "uid-1")
    assert refused == []
    return [p.command for p in pending]


def test_an_interactive_envelope_is_acknowledged_and_approves(
        sim: SlackSim, parts: tuple[FakeSocketClient, FakeObjects, Rollout]) -> None:
    client, isvcs, rollout = parts
    client.deliver(SocketModeRequest("interactive", "env-1", click(sim, rollout)))
    assert [a.envelope_id for a in client.acks] == ["env-1"]
    [command] = commands(isvcs)
    assert (command.action, command.via, command.step) == ("approve", "slack", 1)
    client.deliver(SocketModeRequest("interactive", "env-2", click(sim, rollout)))  # redelivery
    assert len(isvcs.patches) == 1 and len(client.acks) == 2


def test_other_envelopes_are_acknowledged_and_ignored(
        sim: SlackSim, parts: tuple[FakeSocketClient, FakeObjects, Rollout]) -> None:
    client, isvcs, _ = parts
    client.deliver(SocketModeRequest("events_api", "env-3", {"event": {"type": "message"}}))
    assert [a.envelope_id for a in client.acks] == ["env-3"]
    assert isvcs.patches == []


@pytest.mark.parametrize(("who", "team"), [(APPROVER, "T0OTHER01"), (OUTSIDER, TEAM)])
def test_socket_mode_keeps_the_team_and_approver_checks(
        sim: SlackSim, parts: tuple[FakeSocketClient, FakeObjects, Rollout],
        who: str, team: str) -> None:
    client, isvcs, rollout = parts
    client.deliver(SocketModeRequest("interactive", "env-4", click(sim, rollout, user=who,
                                                                   team=team)))
    assert [a.envelope_id for a in client.acks] == ["env-4"]
    assert isvcs.patches == []


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_real_socket_mode_client_over_a_websocket(sim: SlackSim) -> None:
    logs = io.StringIO()
    configure_logging("json", "debug", stream=logs)
    handler, isvcs, rollout = approval_handler(sim)
    settings = SlackSettings(app_token=SecretStr(sim.app_token), api_url=sim.api_url)
    bridge = SocketModeInteractions.from_settings(settings, handler)
    assert bridge is not None
    try:
        bridge.start()
        sim.socket_send({"type": "interactive", "envelope_id": "env-ws-1",
                         "payload": click(sim, rollout), "accepts_response_payload": False})
        assert wait_for(lambda: any(a.get("envelope_id") == "env-ws-1"
                                    for a in sim.socket_acks))
        assert wait_for(lambda: len(isvcs.patches) == 1)
        assert commands(isvcs)[0].by == f"{APPROVER} (alice)"
    finally:
        bridge.close()
        handler.close()
    assert sim.app_token not in logs.getvalue() and BOT_TOKEN not in logs.getvalue()


def test_from_settings_needs_an_app_token(sim: SlackSim) -> None:
    handler = SlackInteractions(SIGNING_SECRET, lambda _: None,
                                FakeObjects(commands_webhook=TEST_SEALER),
                                make_client(BOT_TOKEN, sim.api_url), lambda: datetime.now(UTC),
                                sealer=TEST_SEALER)
    assert SocketModeInteractions.from_settings(SlackSettings(), handler) is None
    bridge = SocketModeInteractions.from_settings(
        SlackSettings(app_token=SecretStr("xapp-1-secret"), api_url=sim.api_url), handler)
    assert bridge is not None                       # built, not connected
    handler.close()
