"""Slack Socket Mode: button clicks over an outbound websocket, for clusters that have no
ingress for ``POST /slack/interactions``.

I/O: ``slack_sdk.socket_mode.SocketModeClient`` (app-level token ``xapp-...``, scope
``connections:write``) connects out to Slack; each envelope is acknowledged at once
(Slack wants that within 3 seconds), then ``interactive`` payloads go to
``SlackInteractions.process``, the same code the HTTP route ends in. There is no HTTP
signature in this mode: the socket, opened with the app token, is what authenticates
Slack; the workspace pin, the approver and the rollout checks all still apply.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog
from slack_sdk import WebClient
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from controller.notifications.interactions import Outcome, SlackInteractions
from controller.settings import SlackSettings

log = structlog.get_logger(__name__)


class SocketClient(Protocol):
    """The part of ``SocketModeClient`` used here (a fake stands in for it in tests)."""

    socket_mode_request_listeners: list[Any]

    def send_socket_mode_response(self, response: SocketModeResponse) -> None: ...

    def connect(self) -> None: ...

    def close(self) -> None: ...


class SocketModeInteractions:
    """Routes Socket Mode envelopes into ``SlackInteractions``."""

    def __init__(self, client: SocketClient, interactions: SlackInteractions) -> None:
        self.client = client
        self.interactions = interactions
        client.socket_mode_request_listeners.append(self.on_request)

    @classmethod
    def from_settings(cls, settings: SlackSettings,
                      interactions: SlackInteractions) -> SocketModeInteractions | None:
        """None when no app token is configured (HTTP interactivity only)."""
        if settings.app_token is None:
            return None
        client = SocketModeClient(app_token=settings.app_token.get_secret_value(),
                                  web_client=WebClient(base_url=settings.api_url, timeout=10))
        return cls(client, interactions)

    def start(self) -> None:
        """Connect (slack_sdk reconnects on its own afterwards)."""
        self.client.connect()

    def close(self) -> None:
        self.client.close()

    def on_request(self, client: SocketClient, request: SocketModeRequest) -> Outcome | None:
        """Acknowledge first, then decide; only ``interactive`` envelopes are acted on."""
        try:
            client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except Exception as err:  # Slack redelivers an unacknowledged envelope
            log.warning("socket mode acknowledgement failed", error=type(err).__name__)
        if request.type != "interactive":
            log.debug("socket mode envelope ignored", type=request.type)
            return None
        outcome = self.interactions.process(request.payload)
        log.info("socket mode interaction", status=outcome.status, result=outcome.result)
        return outcome
