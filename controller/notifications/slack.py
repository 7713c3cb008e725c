"""Slack notifications: one message per rollout, updated in place, with thread replies for
the transitions a policy selects and Approve / Roll back buttons while a step waits.

I/O
---
In: ``RolloutSnapshot`` through ``SlackNotifier.notify`` (called by the reconciler after
each committed transition; returns at once). Out: Slack Web API calls from one
background thread: ``chat.postMessage`` (the rollout's message, then its thread
replies), ``chat.update`` (the message, whenever the snapshot renders differently), and
the message's place (channel, ts) through ``MessageRefs`` so that a restarted controller
keeps updating the same message. Metrics on the registry given to the constructor:
``rollwise_notifications_total{outcome=sent|failed|dropped}``,
``rollwise_notification_queue`` and ``rollwise_slack_rate_limited_total``.

Delivery
--------
Work is queued per rollout id: the latest snapshot wins for the message, thread replies
keep their order. One call per turn, earliest due first, at most one call per channel
per ``Delivery.channel_interval`` (Slack allows about one message per second per
channel). slack_sdk's retry handlers retry a dropped connection, a 500/503 and a 429
whose ``Retry-After`` is short, in the call; anything else failing is retried by the
queue with capped exponential backoff (a 429 after its ``Retry-After``), and given up
after ``Delivery.max_attempts``. A rejected token (``invalid_auth``, ``token_revoked``,
...) is logged and counted once, drops what is queued, and pauses delivery for
``Delivery.auth_cooldown`` instead of retrying forever. Nothing here ever blocks or
raises into the caller, and no token is ever logged.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler, RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from controller.errors import StateUnreadable
from controller.kube import Objects
from controller.kube.annotations import (
    SLACK_MESSAGE_ANNOTATION,
    annotations_of,
    open_slack_message,
    slack_message_value,
)
from controller.policy.model import ALL_EVENTS, RolloutPolicy
from controller.rollout.machine import Event
from controller.rollout.seal import Sealer
from controller.rollout.snapshot import RolloutSnapshot
from controller.rollout.state import Decision, PauseReason, Phase, RolloutState
from controller.settings import SlackSettings

log = structlog.get_logger(__name__)

ACTION_APPROVE = "rollwise_approve"
ACTION_ROLLBACK = "rollwise_rollback"
ACTIONS = (ACTION_APPROVE, ACTION_ROLLBACK)

PolicyLookup = Callable[[str], RolloutPolicy | None]

# Slack error codes that mean the token itself is no good: retrying cannot help.
AUTH_ERRORS = frozenset({"not_authed", "invalid_auth", "token_revoked", "token_expired",
                         "account_inactive", "no_permission", "org_login_required",
                         "team_access_not_granted"})
# Slack error codes worth another try later; any other error code is a bad request.
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error",
                              "service_unavailable", "request_timeout", "team_added_to_org"})
# The message went away (deleted by someone): post a new one.
GONE_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed",
                         "thread_not_found"})


# --- the Web API client ------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, Any], default: float = 1.0) -> float:
    """``Retry-After`` from response headers (values may be strings or lists of them)."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return default
    return default


class BoundedRateLimitHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (it sleeps ``Retry-After``, then retries), bounded: a longer
    ``Retry-After`` than ``max_wait`` is left to the caller, whose queue waits instead of a
    thread. ``listeners`` hear of every 429 the handler retries (for the metric)."""

    def __init__(self, max_wait: float, max_retry_count: int = 2) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait
        self.listeners: list[Callable[[], None]] = []

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response,
                                  error=error):
            return False
        return response is not None and retry_after_seconds(response.headers) <= self.max_wait

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        for listener in self.listeners:
            listener()
        super().prepare_for_next_attempt(state=state, request=request, response=response,
                                         error=error)


def retry_handlers(max_rate_limit_wait: float = 5.0) -> list[RetryHandler]:
    """slack_sdk's own handlers: dropped connections, 500/503, and 429 (``Retry-After``)."""
    return [ConnectionErrorRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=1),
            BoundedRateLimitHandler(max_rate_limit_wait)]


def make_client(token: str, api_url: str, *, timeout: int = 10,
                max_rate_limit_wait: float = 5.0) -> WebClient:
    """A WebClient with bounded waits: an HTTP timeout and capped in-call retries."""
    return WebClient(token=token, base_url=api_url, timeout=timeout,
                     retry_handlers=retry_handlers(max_rate_limit_wait))


# --- what the buttons carry ----------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalTarget:
    """The button ``value``: which rollout and step a click is about. The interaction
    handler checks it against the live state before acting."""

    namespace: str
    name: str
    rollout: str
    step: int

    def to_json(self) -> str:
        return json.dumps({"namespace": self.namespace, "name": self.name,
                           "rollout": self.rollout, "step": self.step},
                          separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ApprovalTarget:
        """Parse a button value; ValueError says what is wrong."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("the button value is not a JSON object")
        strings = [raw.get(k) for k in ("namespace", "name", "rollout")]
        if not all(isinstance(s, str) and 0 < len(s) <= 253 for s in strings):
            raise ValueError("namespace, name and rollout must be non-empty strings")
        step = raw.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError("step must be a non-negative integer")
        return cls(str(raw["namespace"]), str(raw["name"]), str(raw["rollout"]), step)


# --- rendering (pure) ----------------------------------------------------------------------

_EVENT_EMOJI = {
    "started": ":rocket:", "stepAdvanced": ":arrow_forward:", "paused": ":double_vertical_bar:",
    "approvalRequested": ":raising_hand:", "approved": ":white_check_mark:",
    "resumed": ":arrow_forward:", "promoted": ":tada:", "rolledBack": ":rewind:",
    "aborted": ":octagonal_sign:", "blocked": ":no_entry:", "analysisDegraded": ":warning:",
}
SECTION_LIMIT = 3000


def escape(text: str) -> str:
    """Slack mrkdwn escaping: text from the cluster must not become links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(at: datetime) -> str:
    """A date Slack shows in each reader's time zone (ISO as the fallback)."""
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{at.isoformat()}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_LIMIT)}}


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": _clip(t, SECTION_LIMIT)} for t in texts]}


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


@dataclass(frozen=True)
class Rendered:
    text: str                  # the notification / fallback text
    blocks: list[dict[str, Any]]

    @property
    def digest(self) -> str:
        material = json.dumps([self.text, self.blocks], sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()


def _weights(policy: RolloutPolicy | None) -> list[int]:
    return [] if policy is None else [s.weight for s in policy.spec.steps]


def _canary_percent(state: RolloutState) -> int | None:
    if state.phase in (Phase.PROMOTING, Phase.SUCCEEDED):
        return 100
    if state.phase in (Phase.ROLLING_BACK, Phase.FAILED, Phase.ABORTED, Phase.SUPERSEDED,
                       Phase.BLOCKED):
        return 0
    return state.expected_percent


def _step_label(state: RolloutState, weights: Sequence[int]) -> str:
    total = f" of {len(weights)}" if weights else ""
    return f"step {state.step + 1}{total}"


def _headline(state: RolloutState, weights: Sequence[int]) -> tuple[str, str]:
    """(emoji, one line) for where the rollout is."""
    reason = state.last_decision.reason if state.last_decision else ""
    percent = _canary_percent(state)
    step = _step_label(state, weights)
    phase = state.phase
    if phase == Phase.SUCCEEDED:
        return ":white_check_mark:", f"Promoted: {reason or 'the canary serves 100%'}"
    if phase == Phase.FAILED:
        return ":rewind:", f"Rolled back: {reason}"
    if phase == Phase.ABORTED:
        return ":octagonal_sign:", f"Aborted: {reason}"
    if phase == Phase.SUPERSEDED:
        return ":fast_forward:", f"Superseded: {reason or 'a newer model was deployed'}"
    if phase == Phase.BLOCKED:
        return ":no_entry:", f"Blocked: {reason}"
    if phase == Phase.PROMOTING:
        return ":arrow_double_up:", "Promoting: waiting for KServe to confirm 100%"
    if phase == Phase.ROLLING_BACK:
        return ":leftwards_arrow_with_hook:", f"Rolling back: {reason}"
    if phase in (Phase.PENDING, Phase.WAITING_READY):
        return ":hourglass_flowing_sand:", reason or "Waiting for the new revision"
    if phase == Phase.PAUSED:
        pause = state.pause
        why = pause.message if pause is not None and pause.message else reason
        if pause is not None and pause.reason == PauseReason.APPROVAL:
            return ":raising_hand:", f"Waiting for approval at {step} ({percent}%)"
        return ":double_vertical_bar:", f"Paused at {step} ({percent}%): {why}"
    return ":large_blue_circle:", f"{step.capitalize()}: canary at {percent}%"


def _button(action_id: str, label: str, style: str, value: str, question: str,
            consequence: str) -> dict[str, Any]:
    """A button that asks for confirmation first (a misclick moves production traffic)."""
    confirm: dict[str, Any] = {"title": _plain(question),
                               "text": {"type": "mrkdwn", "text": _clip(consequence, 300)},
                               "confirm": _plain(label), "deny": _plain("Cancel")}
    if style == "danger":
        confirm["style"] = "danger"
    return {"type": "button", "action_id": action_id, "style": style, "text": _plain(label),
            "value": value, "confirm": confirm}


def _approval_blocks(snapshot: RolloutSnapshot, policy: RolloutPolicy | None,
                     weights: Sequence[int]) -> list[dict[str, Any]]:
    """The buttons, while a step waits for approval; a CLI hint when nobody may click."""
    state = snapshot.state
    pause = state.pause
    if state.phase != Phase.PAUSED or pause is None or pause.reason != PauseReason.APPROVAL:
        return []
    following = weights[state.step + 1] if state.step + 1 < len(weights) else None
    goal = f"to go to {following}%" if following is not None else "to move on"
    deadline = f" (until {_when(pause.until)})" if pause.until is not None else ""
    blocks = [_section(f":raising_hand: *Waiting for approval {goal}*{deadline}\n"
                       f"{escape(pause.message)}")]
    approvers = policy.spec.approvers if policy is not None else None
    cli = f"`rollwise approve {snapshot.namespace}/{snapshot.name}`"
    if approvers is None or not (approvers.slack_users or approvers.slack_user_groups):
        blocks.append(_context(f"No Slack approvers in the policy: approve with {cli}"))
        return blocks
    value = ApprovalTarget(snapshot.namespace, snapshot.name, state.id, state.step).to_json()
    target = escape(f"{snapshot.namespace}/{snapshot.name}")
    stable = escape(state.baseline_revision or "the stable revision")
    moves = (f"The canary of {target} gets {following}% of the traffic."
             if following is not None else f"{target} moves on.")
    blocks.append({"type": "actions", "block_id": f"rollwise-approval-{state.step}",
                   "elements": [
        _button(ACTION_APPROVE, "Approve", "primary", value, "Approve the next step?", moves),
        _button(ACTION_ROLLBACK, "Roll back", "danger", value, "Roll back this rollout?",
                f"All traffic of {target} goes back to `{stable}`; the rollout ends as "
                "aborted."),
    ]})
    blocks.append(_context(f"Approvers click above, or anyone allowed by RBAC runs {cli}"))
    return blocks


def _decided_lines(state: RolloutState, weights: Sequence[int]) -> list[str]:
    """Who decided what, and when: replaces the buttons once a decision was made."""
    lines = []
    for approval in state.approvals:
        to = weights[approval.step + 1] if approval.step + 1 < len(weights) else None
        towards = f" (to {to}%)" if to is not None else ""
        lines.append(f":white_check_mark: Step {approval.step + 1}{towards} approved by "
                     f"{escape(approval.by)} via {escape(approval.via)} at {_when(approval.at)}")
    decision = state.last_decision
    if decision is not None and Phase.ABORTED in (state.phase, state.ending):
        lines.append(f":octagonal_sign: {escape(decision.reason)} at {_when(decision.at)}")
    return lines


def render(snapshot: RolloutSnapshot, policy: RolloutPolicy | None) -> Rendered:
    """The rollout's one message, from its whole state (so a missed update is caught up)."""
    state = snapshot.state
    weights = _weights(policy)
    emoji, headline = _headline(state, weights)
    target = f"{snapshot.namespace}/{snapshot.name}"
    link = f"<{snapshot.url}|{escape(target)}>" if snapshot.url else f"*{escape(target)}*"
    blocks: list[dict[str, Any]] = [_section(f"{emoji} {link}: *{escape(headline)}*")]
    percent = _canary_percent(state)
    fields = [f"*Model*\n`{escape(state.storage_uri or state.spec_hash[:12])}`",
              f"*Canary*\n`{escape(state.revision or 'not created yet')}`"
              + (f" at {percent}%" if percent is not None else ""),
              f"*Stable*\n`{escape(state.baseline_revision or '-')}`",
              f"*Policy*\n`{escape(snapshot.policy)}`, {_step_label(state, weights)}"]
    blocks.append({"type": "section",
                   "fields": [{"type": "mrkdwn", "text": _clip(f, 2000)} for f in fields]})
    if state.last_verdict:
        blocks.append(_section(f"*Last verdict:* {escape(state.last_verdict)}"))
    blocks += _approval_blocks(snapshot, policy, weights)
    decided = _decided_lines(state, weights)
    if decided:
        blocks.append(_context(*decided[-10:]))
    footer = f"Rollout `{escape(state.id)}` started {_when(state.started_at)}"
    if state.last_decision is not None:
        footer += (f" · last decision _{escape(state.last_decision.action)}_ "
                   f"{_when(state.last_decision.at)}")
    blocks.append(_context(footer))
    return Rendered(_clip(f"{target}: {headline}", SECTION_LIMIT), blocks)


def superseded(previous: RolloutSnapshot, *, by: RolloutSnapshot) -> RolloutSnapshot:
    """The last word on a rollout that a newer model replaced mid-way. The state machine
    starts the new rollout's state from scratch, so nobody else would ever tell the old
    message (and its buttons) that it is over."""
    at = by.state.started_at
    state = previous.state.evolve(
        phase=Phase.SUPERSEDED, phase_since=at, pause=None,
        last_decision=Decision("superseded", f"superseded by rollout {by.state.id}", at))
    return replace(previous, state=state, events=())


def reply_text(event: Event) -> str:
    """A thread reply for one transition."""
    emoji = _EVENT_EMOJI.get(event.kind, ":information_source:")
    return _clip(f"{emoji} *{escape(event.reason)}*: {escape(event.message)}", SECTION_LIMIT)


# --- where the message lives ------------------------------------------------------------


@dataclass(frozen=True)
class MessageRef:
    channel: str               # the channel id Slack returned (chat.update wants the id)
    ts: str


class MessageRefs(Protocol):
    """Where a rollout's message is, kept where a restarted controller finds it."""

    def get(self, snapshot: RolloutSnapshot) -> MessageRef | None:
        """The message of ``snapshot.state.id``, or None when none was posted."""

    def put(self, snapshot: RolloutSnapshot, ref: MessageRef) -> None:
        """Remember the message of ``snapshot.state.id``."""


@dataclass
class InMemoryMessageRefs:
    """For tests and for running without write access to InferenceServices."""

    refs: dict[str, MessageRef] = field(default_factory=dict)

    def get(self, snapshot: RolloutSnapshot) -> MessageRef | None:
        return self.refs.get(snapshot.state.id)

    def put(self, snapshot: RolloutSnapshot, ref: MessageRef) -> None:
        self.refs[snapshot.state.id] = ref


@dataclass
class AnnotationMessageRefs:
    """The ref in the ``rollwise.io/slack-message`` annotation of the InferenceService,
    as ``{"rollout", "channel", "ts"}``, sealed for the object (a hand-written ref would
    have the bot edit another of its messages). Written with a merge patch that touches
    only that key and carries no resourceVersion: it can never undo a state write."""

    isvcs: Objects
    sealer: Sealer

    def get(self, snapshot: RolloutSnapshot) -> MessageRef | None:
        obj = self.isvcs.get(snapshot.namespace, snapshot.name)
        if obj is None:
            return None
        text = annotations_of(obj).get(SLACK_MESSAGE_ANNOTATION)
        if not text:
            return None
        try:
            found = open_slack_message(text, snapshot.state.id, snapshot.uid, self.sealer)
            if found is None:
                return None              # the message of an earlier rollout
            return MessageRef(*found)
        except (StateUnreadable, KeyError, TypeError) as err:
            log.warning("slack message annotation ignored", namespace=snapshot.namespace,
                        name=snapshot.name, error=str(err))
            return None

    def put(self, snapshot: RolloutSnapshot, ref: MessageRef) -> None:
        value = slack_message_value(snapshot.state.id, ref.channel, ref.ts, snapshot.uid,
                                    self.sealer)
        self.isvcs.patch(snapshot.namespace, snapshot.name,
                         {"metadata": {"annotations": {SLACK_MESSAGE_ANNOTATION: value}}})


# --- metrics ---------------------------------------------------------------------------


class NotificationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter("rollwise_notifications_total",
                             "Slack deliveries by outcome: sent (a call succeeded), failed "
                             "(a call failed; it may be retried), dropped (given up).",
                             ["outcome"], registry=registry)
        self.queue = Gauge("rollwise_notification_queue",
                           "Slack deliveries waiting (message updates and thread replies).",
                           registry=registry)
        self.rate_limited = Counter("rollwise_slack_rate_limited_total",
                                    "Slack answers with HTTP 429 (rate limited).",
                                    registry=registry)
        for outcome in ("sent", "failed", "dropped"):
            self.total.labels(outcome)

    def count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.total.labels(outcome).inc(n)


# --- the notifier -----------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """Knobs of the background delivery; every wait is bounded by one of them."""

    backoff_base: float = 1.0          # first retry after this many seconds, doubling ...
    backoff_cap: float = 60.0          # ... up to this
    max_attempts: int = 10             # failed attempts in a row before an item is dropped
    max_retry_after: float = 600.0     # a longer Retry-After is capped
    inline_rate_limit_wait: float = 5.0  # slack_sdk sleeps up to this in the call itself
    channel_interval: float = 1.0      # at least this long between calls to one channel
    auth_cooldown: float = 900.0       # after a rejected token, stop this long
    max_rollouts: int = 500            # rollouts with pending work; more are dropped
    max_replies: int = 50              # queued replies per rollout; the oldest go first
    timeout: int = 10                  # HTTP timeout of one call, seconds
    known_messages: int = 2000         # message refs cached in memory


@dataclass(frozen=True)
class _Reply:
    seq: int
    text: str


@dataclass
class _Work:
    """Everything still to do for one rollout."""

    snapshot: RolloutSnapshot
    policy: RolloutPolicy | None
    channel: str
    version: int = 0
    dirty: bool = True                 # the message must be brought up to date
    replies: deque[_Reply] = field(default_factory=deque)
    ref: MessageRef | None = None
    ref_checked: bool = False          # MessageRefs consulted (once per process)
    due: float = 0.0
    attempts: int = 0

    @property
    def units(self) -> int:
        return int(self.dirty) + len(self.replies)


@dataclass(frozen=True)
class _Job:
    key: str
    kind: Literal["message", "reply"]
    version: int
    snapshot: RolloutSnapshot
    policy: RolloutPolicy | None
    channel: str
    ref: MessageRef | None
    check_ref: bool
    reply: _Reply | None


class SlackNotifier:
    """``Notifier`` on Slack. ``notify`` only queues; a daemon thread delivers (``start``
    it, or let ``from_settings`` do so; ``close`` stops it)."""

    def __init__(self, client: WebClient, policies: PolicyLookup,
                 registry: CollectorRegistry, *, refs: MessageRefs | None = None,
                 default_channels: Mapping[str, str] | None = None,
                 delivery: Delivery | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.policies = policies
        self.refs: MessageRefs = refs if refs is not None else InMemoryMessageRefs()
        self.default_channels = dict(default_channels or {})
        self.delivery = delivery or Delivery()
        self.metrics = NotificationMetrics(registry)
        self.clock = clock
        for handler in client.retry_handlers:
            if isinstance(handler, BoundedRateLimitHandler):
                handler.listeners.append(self.metrics.rate_limited.inc)
        self._pending: dict[str, _Work] = {}
        self._known: OrderedDict[str, MessageRef] = OrderedDict()
        self._sent_digest: OrderedDict[str, str] = OrderedDict()
        self._latest: OrderedDict[str, RolloutSnapshot] = OrderedDict()   # per object
        self._last_call: dict[str, float] = {}
        self._seq = 0
        self._busy = False
        self._stopping = False
        self._closed = False
        self._channel_ids: dict[str, str] = {}     # channel name -> the id Slack returned
        self._auth_blocked_until = 0.0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: SlackSettings, policies: PolicyLookup,
                      registry: CollectorRegistry, *, isvcs: Objects | None = None,
                      sealer: Sealer | None = None,
                      delivery: Delivery | None = None) -> SlackNotifier | None:
        """The notifier the settings describe, or None when no bot token is configured.
        With ``isvcs`` and ``sealer``, message refs live in an annotation (survive
        restarts)."""
        if settings.bot_token is None:
            return None
        delivery = delivery or Delivery()
        client = make_client(settings.bot_token.get_secret_value(), settings.api_url,
                             timeout=delivery.timeout,
                             max_rate_limit_wait=delivery.inline_rate_limit_wait)
        refs = (AnnotationMessageRefs(isvcs, sealer)
                if isvcs is not None and sealer is not None else None)
        notifier = cls(client, policies, registry, refs=refs,
                       default_channels=settings.default_channels, delivery=delivery)
        notifier.start()
        return notifier

    # -- the caller's side: never blocks, never raises ---------------------------------

    def notify(self, snapshot: RolloutSnapshot) -> None:
        try:
            self._enqueue(snapshot)
        except Exception as err:  # a notification problem must never reach the reconciler
            self.metrics.count("dropped")
            log.error("slack notification not queued", error=f"{type(err).__name__}: {err}",
                      namespace=snapshot.namespace, name=snapshot.name)

    def __call__(self, snapshot: RolloutSnapshot) -> None:
        """So that the notifier can be given to the reconciler as an observer."""
        self.notify(snapshot)

    def channel_for(self, snapshot: RolloutSnapshot,
                    policy: RolloutPolicy | None) -> tuple[str | None, frozenset[str]]:
        """(channel, selected event kinds): the policy's, else the namespace default."""
        slack = policy.spec.notifications.slack if policy is not None else None
        if slack is not None:
            return slack.channel, frozenset(slack.events)
        return self.default_channels.get(snapshot.namespace), frozenset(ALL_EVENTS)

    def _enqueue(self, snapshot: RolloutSnapshot) -> None:
        state = snapshot.state
        if state.last_decision is not None and state.last_decision.action == "adopt":
            return                       # first sight of a serving model: nothing rolled out
        with self._cond:
            previous = self._latest.get(snapshot.key)
            self._remember(self._latest, snapshot.key, snapshot)
        if previous is not None and previous.state.id != state.id and (
                not previous.state.phase.terminal):
            self._queue(superseded(previous, by=snapshot))    # its buttons must go
        self._queue(snapshot)

    def _queue(self, snapshot: RolloutSnapshot) -> None:
        state = snapshot.state
        policy = self.policies(snapshot.policy)
        channel, kinds = self.channel_for(snapshot, policy)
        if channel is None:
            return
        texts = [reply_text(e) for e in snapshot.events if e.kind in kinds]
        with self._cond:
            now = self.clock()
            if self._closed:
                return
            if now < self._auth_blocked_until:
                self.metrics.count("dropped", 1 + len(texts))
                return
            work = self._pending.get(state.id)
            if work is None:
                if len(self._pending) >= self.delivery.max_rollouts:
                    self.metrics.count("dropped", 1 + len(texts))
                    log.warning("slack queue full; notification dropped", rollout=state.id,
                                namespace=snapshot.namespace, name=snapshot.name)
                    return
                work = _Work(snapshot, policy, channel, due=now, ref=self._known.get(state.id))
                self._pending[state.id] = work
            work.snapshot, work.policy = snapshot, policy
            work.version += 1
            work.dirty = True
            for text in texts:
                self._seq += 1
                work.replies.append(_Reply(self._seq, text))
            overflow = len(work.replies) - self.delivery.max_replies
            for _ in range(max(0, overflow)):
                work.replies.popleft()
            self.metrics.count("dropped", max(0, overflow))
            self._update_gauge()
            self._cond.notify_all()
        self.start()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread. ``notify`` starts it too, but starting a thread can
        take milliseconds on a busy machine: start it before the first transition."""
        with self._cond:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="slack-notifier")
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop delivering (what is still queued is not sent)."""
        with self._cond:
            self._stopping = self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    @property
    def queued(self) -> int:
        with self._cond:
            return sum(w.units for w in self._pending.values())

    # -- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._perform(job)
            except Exception as err:
                self._failed(job, err)
            finally:
                with self._cond:
                    self._busy = False
                    self._update_gauge()
                    self._cond.notify_all()

    def _next_job(self) -> _Job | None:
        """The earliest due piece of work (waiting, in bounded slices, until one is)."""
        with self._cond:
            while not self._stopping:
                now = self.clock()
                work = min(self._pending.values(), key=lambda w: w.due, default=None)
                if work is not None and work.due <= now:
                    free_at = (self._last_call.get(self._gate(work.channel, work.ref),
                                                   float("-inf"))
                               + self.delivery.channel_interval)
                    if free_at > now:
                        work.due = free_at
                        continue
                    self._busy = True
                    key = work.snapshot.state.id
                    message = work.dirty or work.ref is None
                    return _Job(key, "message" if message else "reply", work.version,
                                work.snapshot, work.policy, work.channel, work.ref,
                                not work.ref_checked,
                                None if message else work.replies[0])
                wait = 1.0 if work is None else min(max(work.due - now, 0.0), 1.0)
                self._cond.wait(wait)
            return None

    def _perform(self, job: _Job) -> None:
        ref = job.ref
        if ref is None and job.check_ref:
            ref = self._stored_ref(job.snapshot)
            with self._cond:
                work = self._pending.get(job.key)
                if work is not None:
                    work.ref_checked = True
                    work.ref = ref
        with self._cond:
            self._last_call[self._gate(job.channel, ref)] = self.clock()
        if job.kind == "reply":
            assert ref is not None and job.reply is not None
            self.client.chat_postMessage(channel=ref.channel, thread_ts=ref.ts,
                                         text=job.reply.text, unfurl_links=False)
            self._done(job, ref)
            return
        rendered = render(job.snapshot, job.policy)
        if ref is None:
            response = self.client.chat_postMessage(channel=job.channel, text=rendered.text,
                                                    blocks=rendered.blocks, unfurl_links=False)
            ref = MessageRef(str(response["channel"]), str(response["ts"]))
            with self._cond:
                self._channel_ids[job.channel] = ref.channel
            self._store_ref(job.snapshot, ref)
        elif self._sent_digest.get(job.key) != rendered.digest:
            self.client.chat_update(channel=ref.channel, ts=ref.ts, text=rendered.text,
                                    blocks=rendered.blocks)
        else:
            self._done(job, ref, sent=False)       # nothing visible changed: no call
            return
        self._remember(self._sent_digest, job.key, rendered.digest)
        self._done(job, ref)

    def _gate(self, channel: str, ref: MessageRef | None) -> str:
        """One pacing key per channel, whether named (``#x``) or by id."""
        return ref.channel if ref is not None else self._channel_ids.get(channel, channel)

    def _stored_ref(self, snapshot: RolloutSnapshot) -> MessageRef | None:
        try:
            return self.refs.get(snapshot)
        except Exception as err:
            log.warning("slack message ref unreadable; posting a new message",
                        error=f"{type(err).__name__}: {err}", namespace=snapshot.namespace,
                        name=snapshot.name)
            return None

    def _store_ref(self, snapshot: RolloutSnapshot, ref: MessageRef) -> None:
        try:
            self.refs.put(snapshot, ref)
        except Exception as err:  # the message stands; only a restart would lose track of it
            log.warning("slack message ref not stored", error=f"{type(err).__name__}: {err}",
                        namespace=snapshot.namespace, name=snapshot.name)

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.delivery.known_messages:
            cache.popitem(last=False)

    def _done(self, job: _Job, ref: MessageRef, *, sent: bool = True) -> None:
        with self._cond:
            if sent:
                self.metrics.count("sent")
            self._remember(self._known, job.key, ref)
            work = self._pending.get(job.key)
            if work is None:
                return
            work.ref, work.attempts = ref, 0
            if job.kind == "message" and work.version == job.version:
                work.dirty = False
            if job.kind == "reply" and work.replies and job.reply is not None and (
                    work.replies[0].seq == job.reply.seq):
                work.replies.popleft()
            if not work.units:
                del self._pending[job.key]

    def _failed(self, job: _Job, err: Exception) -> None:
        """Classify a failed call: back off, drop, or stop for a bad token."""
        code, status, retry_after = _error_facts(err)
        context = {"rollout": job.key, "namespace": job.snapshot.namespace,
                   "name": job.snapshot.name, "channel": job.channel, "call": job.kind,
                   "error": code or type(err).__name__}
        with self._cond:
            self.metrics.count("failed")
            work = self._pending.get(job.key)
            now = self.clock()
            if status == 429 or code == "ratelimited":
                self.metrics.rate_limited.inc()
            if code in AUTH_ERRORS:
                dropped = sum(w.units for w in self._pending.values())
                self._pending.clear()
                self.metrics.count("dropped", dropped)
                self._auth_blocked_until = now + self.delivery.auth_cooldown
                log.error("slack rejected the bot token; notifications paused",
                          pause_seconds=self.delivery.auth_cooldown, dropped=dropped,
                          **context)
                return
            if work is None:
                return
            work.attempts += 1
            gone = code in GONE_ERRORS
            transient = (code is None or code in TRANSIENT_ERRORS or status == 429
                         or (status is not None and status >= 500))
            if gone and work.attempts < self.delivery.max_attempts:
                # Someone deleted the message (or its thread): post a new one, then go on.
                work.ref, work.ref_checked, work.dirty = None, True, True
                self._known.pop(job.key, None)
                log.warning("slack message gone; posting a new one", **context)
                return
            if not transient or work.attempts >= self.delivery.max_attempts:
                self.metrics.count("dropped", work.units)
                del self._pending[job.key]
                log.error("slack notification dropped", attempts=work.attempts,
                          detail=_clip(str(err), 300) if code is None else None, **context)
                return
            if status == 429 or code == "ratelimited":
                delay = min(retry_after or 1.0, self.delivery.max_retry_after)
            else:
                delay = min(self.delivery.backoff_base * 2 ** (work.attempts - 1),
                            self.delivery.backoff_cap)
            work.due = now + delay
            log.warning("slack call failed; retrying", retry_in=round(delay, 3),
                        attempt=work.attempts, **context)

    def _update_gauge(self) -> None:
        self.metrics.queue.set(sum(w.units for w in self._pending.values()))


def _error_facts(err: Exception) -> tuple[str | None, int | None, float | None]:
    """(Slack error code, HTTP status, Retry-After) of a failed call. No code and no status
    means the call never got an answer (connection refused, timeout, dropped line)."""
    if isinstance(err, SlackApiError):
        response = err.response
        data = getattr(response, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        status = getattr(response, "status_code", None)
        headers = getattr(response, "headers", None) or {}
        retry = retry_after_seconds(headers) if status == 429 else None
        return (str(code) if code else f"http_{status}"), status, retry
    return None, None, None
