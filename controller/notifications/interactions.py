"""Slack interactivity: an Approve or Roll back click becomes a ``Command`` on the
InferenceService, after checking that it really comes from Slack, from the right
workspace, from an approver, and about the step that is waiting now.

I/O
---
In: ``POST /slack/interactions`` (``handle``: a ``controller.server.Request``), or a
Socket Mode ``interactive`` envelope (``process``, from ``socket_mode``). Out: the HTTP
status (``controller.server.Response``); at most one command appended through
``controller.kube.commands.submit_command``; one ephemeral reply to the clicking user
(through the payload's ``response_url``, else ``chat.postEphemeral``); Slack
``usergroups.users.list`` to check group approvers (cached); a log line for every
rejection (never a secret, a signature, a ``response_url`` or a body).

=================================================  ======  =========================
case                                               status  effect
=================================================  ======  =========================
body over 64 KiB                                   400     none
signature missing / forged, timestamp off by >5m,  401     none
body not UTF-8 (slack_sdk cannot verify it)
body not ``payload=<JSON object>``                 400     none
payload type other than ``block_actions``          400     none
team other than the pinned ``team_id``             403     none
malformed action / value, unknown ``action_id``    400     none
not an approver of the policy                      200     ephemeral "why not"
rollout gone, ended, or waiting for another step   200     ephemeral "no longer waiting"
same click again (double click, replayed request)  200     ephemeral "already recorded"
                                                           (once acted on: "no longer
                                                           waiting"); no new command
more than ``max_in_flight`` clicks being decided   503     none (Slack shows an error)
otherwise                                          200     command written, ephemeral
=================================================  ======  =========================

Slack wants the answer within 3 seconds: the checks that need no I/O (size, signature,
form, team, action) run inline; the rest (Kubernetes read and write, group lookup,
reply) runs on a small thread pool, and the answer waits for it at most ``ack_seconds``
before saying 200 anyway.

The command id is derived from (team, user, rollout, step, action), not from
``action_ts``: a double click and a replayed request map to the same id, which
``submit_command`` and the state machine's remembered ids turn into one action.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import structlog
from slack_sdk import WebClient
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook import WebhookClient

from controller.kube import Objects
from controller.kube.annotations import read_stored
from controller.kube.commands import CommandNotDelivered, submit_command
from controller.notifications.slack import (
    ACTION_APPROVE,
    ACTION_ROLLBACK,
    ApprovalTarget,
    PolicyLookup,
    make_client,
    retry_handlers,
)
from controller.policy.model import Approvers
from controller.rollout.seal import Sealer
from controller.rollout.state import Command, CommandAction, PauseReason, Phase, RolloutState
from controller.server import Request, Response
from controller.settings import SlackSettings

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
SLACK_RESPONSE_URLS = ("https://hooks.slack.com/",)
_ACTIONS: dict[str, CommandAction] = {ACTION_APPROVE: "approve", ACTION_ROLLBACK: "abort"}


class Rejected(Exception):
    """A request refused before any I/O: the status to answer and a loggable reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Click:
    """One button click, as far as Rollwise cares."""

    action: CommandAction
    target: ApprovalTarget
    user_id: str
    user_name: str
    team_id: str
    response_url: str | None
    channel_id: str | None

    @property
    def who(self) -> str:
        return f"{self.user_id} ({self.user_name})" if self.user_name else self.user_id

    @property
    def command_id(self) -> str:
        """Deterministic: the same person clicking the same button again is the same
        command (see the module docstring)."""
        t = self.target
        material = "\x1f".join((self.team_id, self.user_id, t.namespace, t.name, t.rollout,
                                str(t.step), self.action))
        return "slack-" + hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Outcome:
    """What became of a request: the HTTP status and a short label (tests, logs)."""

    status: int
    result: str


# --- parsing (pure) ------------------------------------------------------------------------


def parse_form(body: bytes) -> dict[str, Any]:
    """The ``payload`` field of a form body, as a JSON object; ValueError otherwise."""
    fields = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=16)
    values = fields.get("payload")
    if not values or len(values) != 1:
        raise ValueError("expected exactly one payload field")
    payload = json.loads(values[0])
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    return payload


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def payload_teams(payload: Mapping[str, Any]) -> set[str]:
    """The workspace (and Enterprise Grid org) a payload says it comes from."""
    teams = set()
    for key in ("team", "enterprise"):
        section = payload.get(key)
        if isinstance(section, Mapping) and _text(section.get("id")):
            teams.add(str(section["id"]))
    return teams


def parse_click(payload: Mapping[str, Any]) -> Click:
    """A ``block_actions`` payload with one of our buttons; Rejected(400) otherwise."""
    if payload.get("type") != "block_actions":
        raise Rejected(400, f"unsupported payload type {str(payload.get('type'))[:40]!r}")
    user = payload.get("user")
    if not isinstance(user, Mapping) or not _text(user.get("id")):
        raise Rejected(400, "payload without user.id")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0],
                                                                             Mapping):
        raise Rejected(400, "expected exactly one action")
    action = actions[0]
    action_id = action.get("action_id")
    if action_id not in _ACTIONS:
        raise Rejected(400, f"unknown action_id {str(action_id)[:60]!r}")
    value = action.get("value")
    if not isinstance(value, str) or len(value) > 2000:
        raise Rejected(400, "action without a value")
    try:
        target = ApprovalTarget.from_json(value)
    except ValueError as err:
        raise Rejected(400, f"malformed button value: {err}") from err
    container = payload.get("container")
    channel = payload.get("channel")
    channel_id = (_text(container.get("channel_id")) if isinstance(container, Mapping)
                  else None) or (_text(channel.get("id")) if isinstance(channel, Mapping)
                                 else None)
    team = payload.get("team")
    team_id = (_text(team.get("id")) if isinstance(team, Mapping) else None) or _text(
        user.get("team_id")) or ""
    return Click(action=_ACTIONS[action_id], target=target, user_id=str(user["id"]),
                 user_name=_text(user.get("username")) or _text(user.get("name")) or "",
                 team_id=team_id, response_url=_text(payload.get("response_url")),
                 channel_id=channel_id)


def not_waiting(state: RolloutState | None, target: ApprovalTarget) -> str | None:
    """Why the rollout is not waiting for this click's decision (None: it is)."""
    if state is None:
        return "the InferenceService has no rollout"
    if state.id != target.rollout:
        return f"rollout {target.rollout} was replaced by rollout {state.id}"
    if state.phase.terminal or state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
        return f"the rollout has ended ({state.phase})"
    if state.phase != Phase.PAUSED or state.pause is None or (
            state.pause.reason != PauseReason.APPROVAL):
        return f"the rollout is {state.phase}, not waiting for an approval"
    if state.step != target.step:
        return f"it waits at step {state.step + 1}, not step {target.step + 1}"
    return None


class _VerifierClock(Clock):
    """The injected clock, as slack_sdk's verifier wants it (epoch seconds)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock().timestamp()


# --- the handler -------------------------------------------------------------------------


class SlackInteractions:
    """Both transports (HTTP and Socket Mode) end in ``process``; HTTP verifies first."""

    def __init__(self, signing_secret: str | None, policies: PolicyLookup,
                 isvcs: Objects, client: WebClient, clock: Callable[[], datetime], *,
                 sealer: Sealer, team_id: str | None = None,
                 group_cache: timedelta = timedelta(minutes=5), ack_seconds: float = 2.0,
                 workers: int = 4, max_in_flight: int = 32,
                 response_urls: Sequence[str] = SLACK_RESPONSE_URLS) -> None:
        # No signing secret (Socket Mode only): every HTTP request fails verification.
        self._verifier = (SignatureVerifier(signing_secret, clock=_VerifierClock(clock))
                          if signing_secret else None)
        self.policies = policies
        self.isvcs = isvcs
        self.sealer = sealer      # reads only what Rollwise wrote; seals the commands it adds
        self.client = client
        self.clock = clock
        self.team_id = team_id
        self.group_cache = group_cache
        self.ack_seconds = ack_seconds
        self.response_urls = tuple(response_urls)
        self._groups: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._groups_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="slack-interactions")

    @classmethod
    def from_settings(cls, settings: SlackSettings, policies: PolicyLookup,
                      isvcs: Objects, *, sealer: Sealer, team_id: str | None = None,
                      clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                      response_urls: Sequence[str] = SLACK_RESPONSE_URLS,
                      ) -> SlackInteractions | None:
        """The handler the settings describe: None with neither a signing secret (HTTP)
        nor an app token (Socket Mode). Without a signing secret every HTTP request is
        refused (401): an unverifiable request must never act."""
        if settings.signing_secret is None and settings.app_token is None:
            return None
        token = settings.bot_token.get_secret_value() if settings.bot_token else ""
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
        return cls(secret, policies, isvcs, make_client(token, settings.api_url), clock,
                   sealer=sealer, team_id=team_id, response_urls=response_urls)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- transports -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """``POST /slack/interactions``: verify, parse, then the shared ``process``."""
        try:
            if len(request.body) > MAX_BODY:
                raise Rejected(400, f"body of {len(request.body)} bytes exceeds {MAX_BODY}")
            if not self._signed(request):
                raise Rejected(401, "invalid signature or stale timestamp")
            try:
                payload = parse_form(request.body)
            except ValueError as err:       # includes bad UTF-8 and bad JSON
                raise Rejected(400, f"malformed body: {type(err).__name__}") from err
        except Rejected as rejected:
            outcome = self._rejected(rejected, None)
        else:
            outcome = self.process(payload)
        body = b"" if outcome.status == 200 else f"{outcome.result}\n".encode()
        return Response(outcome.status, body)

    def _signed(self, request: Request) -> bool:
        if self._verifier is None:
            return False
        try:
            return self._verifier.is_valid_request(request.body, request.headers)
        except (ValueError, TypeError):      # a timestamp that is not a number, bad UTF-8
            return False

    def process(self, payload: Mapping[str, Any]) -> Outcome:
        """A payload from an authenticated transport: team, action, then the decision on a
        worker, answered within ``ack_seconds`` whatever the decision takes."""
        try:
            if self.team_id is not None and self.team_id not in payload_teams(payload):
                raise Rejected(403, "payload from another Slack workspace")
            click = parse_click(payload)
        except Rejected as rejected:
            return self._rejected(rejected, payload)
        if not self._slots.acquire(blocking=False):
            return self._rejected(Rejected(503, "too many interactions in flight"), payload)
        try:
            future: Future[Outcome] = self._pool.submit(self.decide, click)
        except RuntimeError:                 # shut down
            self._slots.release()
            return self._rejected(Rejected(503, "shutting down"), payload)
        future.add_done_callback(lambda _: self._slots.release())
        try:
            return future.result(timeout=self.ack_seconds)
        except FutureTimeout:
            log.info("slack interaction still being decided; acknowledged",
                     user=click.user_id, namespace=click.target.namespace,
                     name=click.target.name)
            return Outcome(200, "acknowledged")

    def _rejected(self, rejected: Rejected, payload: Mapping[str, Any] | None) -> Outcome:
        user = payload.get("user") if payload is not None else None
        log.warning("slack interaction rejected", status=rejected.status,
                    reason=rejected.reason,
                    team=",".join(sorted(payload_teams(payload))) if payload else None,
                    user=user.get("id") if isinstance(user, Mapping) else None)
        return Outcome(rejected.status, rejected.reason)

    # -- the decision (shared) --------------------------------------------------------------

    def decide(self, click: Click) -> Outcome:
        """Check the live rollout and the approver, then write the command. Never raises."""
        try:
            return self._decide(click)
        except Exception as err:  # the user must hear something; the server must not 500
            log.error("slack interaction failed", error=f"{type(err).__name__}: {err}",
                      user=click.user_id, namespace=click.target.namespace,
                      name=click.target.name)
            self._reply(click, ":x: Rollwise could not handle this click right now; try "
                               "again, or use the `rollwise` CLI.")
            return Outcome(200, "error")

    def _decide(self, click: Click) -> Outcome:
        target = click.target
        where = f"{target.namespace}/{target.name}"
        bound = log.bind(user=click.user_id, namespace=target.namespace, name=target.name,
                         rollout=target.rollout, step=target.step, action=click.action)
        obj = self.isvcs.get(target.namespace, target.name)
        managed = read_stored(obj, self.sealer) if obj is not None else None
        if managed is None:
            return self._refuse(click, bound, "not-waiting", "the InferenceService is gone "
                                f"or no longer managed by Rollwise: {where}")
        policy = self.policies(managed.policy)
        if policy is None:
            return self._refuse(click, bound, "no-policy",
                                f"policy `{managed.policy}` of {where} is not loaded, so "
                                "its approvers are unknown; use `rollwise approve`.")
        allowed, why = self._approver(click.user_id, policy.spec.approvers)
        if not allowed:
            return self._refuse(click, bound, "not-approver", why)
        waiting = not_waiting(managed.state, target)
        if waiting is not None:
            return self._refuse(click, bound, "not-waiting",
                                f"This rollout is no longer waiting for step "
                                f"{target.step + 1} of {where}: {waiting}. Nothing changed.")
        command_id = click.command_id
        state = managed.state
        assert state is not None
        if command_id in state.handled_commands or any(c.id == command_id
                                                       for c in managed.commands):
            bound.info("slack click already recorded", command=command_id)
            self._reply(click, f"Already recorded: your {click.action} of {where}.")
            return Outcome(200, "duplicate")
        command = Command(id=command_id, action=click.action, by=click.who, at=self.clock(),
                          via="slack", rollout=target.rollout,
                          step=target.step if click.action == "approve" else None)
        try:
            submit_command(self.isvcs, target.namespace, target.name, command,
                           sealer=self.sealer)
        except CommandNotDelivered as err:
            return self._refuse(click, bound, "error", f"Not recorded: {err}")
        bound.info("slack command recorded", command=command_id)
        what = (f"approval of step {target.step + 1}" if click.action == "approve"
                else "roll back")
        self._reply(click, f":ok_hand: Recorded your {what} of {where}. The controller acts "
                           "on it within a few seconds; the message above follows.")
        return Outcome(200, "recorded")

    def _refuse(self, click: Click, bound: Any, result: str, text: str) -> Outcome:
        bound.warning("slack interaction refused", result=result, why=text)
        self._reply(click, f":no_entry_sign: {text}")
        return Outcome(200, result)

    def _approver(self, user_id: str, approvers: Approvers) -> tuple[bool, str]:
        if user_id in approvers.slack_users:
            return True, ""
        if not approvers.slack_users and not approvers.slack_user_groups:
            return False, ("This policy has no Slack approvers; approve with "
                           "`rollwise approve`.")
        for group in approvers.slack_user_groups:
            try:
                if user_id in self._members(group):
                    return True, ""
            except Exception as err:
                response = getattr(err, "response", None)
                log.warning("slack user group lookup failed", group=group,
                            error=type(err).__name__,
                            code=response.get("error") if response is not None else None)
                return False, ("Could not check the approver groups right now; try again "
                               "in a minute, or use `rollwise approve`.")
        return False, ("You are not an approver of this rollout (the policy lists its Slack "
                       "approvers and user groups).")

    def _members(self, group: str) -> frozenset[str]:
        """Members of a user group, cached for ``group_cache``."""
        now = self.clock()
        with self._groups_lock:
            cached = self._groups.get(group)
            if cached is not None and cached[0] > now:
                return cached[1]
        response = self.client.usergroups_users_list(usergroup=group)
        members = frozenset(str(u) for u in response.get("users") or ())
        with self._groups_lock:
            self._groups[group] = (now + self.group_cache, members)
        return members

    def _reply(self, click: Click, text: str) -> None:
        """An ephemeral answer to the person who clicked; failures are only logged."""
        try:
            url = click.response_url
            if url is not None and url.startswith(self.response_urls):
                response = WebhookClient(url, timeout=5, retry_handlers=retry_handlers()).send(
                    text=text, response_type="ephemeral", replace_original=False)
                if response.status_code != 200:
                    log.warning("slack ephemeral reply refused", user=click.user_id,
                                status=response.status_code)
            elif click.channel_id is not None:
                self.client.chat_postEphemeral(channel=click.channel_id, user=click.user_id,
                                               text=text)
        except Exception as err:
            log.warning("slack ephemeral reply failed", user=click.user_id,
                        error=type(err).__name__)
