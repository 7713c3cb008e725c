"""A rollout's durable state, what the controller observes, and operator commands.

Pure: plain frozen dataclasses with JSON round-trips, no I/O. The state is stored on
the managed object in an annotation (``controller.kube.annotations`` is the codec of
every key), written in the same request as the traffic change (fenced by
resourceVersion), so that traffic and state never disagree and a restarted controller
resumes exactly where the last committed write left it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

STATE_VERSION = 1


class Phase(StrEnum):
    """Where a rollout is. Terminal phases keep their state until the next deploy."""

    PENDING = "Pending"            # a new model spec was seen; waiting for its revision
    BLOCKED = "Blocked"            # the pre-rollout gate refused the model: it gets no traffic
    WAITING_READY = "WaitingReady" # the canary revision exists and is not ready yet
    PROGRESSING = "Progressing"    # at a step, analysing
    PAUSED = "Paused"              # at a step, waiting (approval, duration, human, missing data)
    PROMOTING = "Promoting"        # promotion written; waiting for the serving layer to confirm
    ROLLING_BACK = "RollingBack"   # canary weight 0 written; waiting for the serving layer
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"      # a newer model was deployed mid-rollout

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def analysing(self) -> bool:
        """Phases in which the canary serves traffic and the judge looks at it."""
        return self in (Phase.PROGRESSING, Phase.PAUSED)


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED, Phase.SUPERSEDED})


class PauseReason(StrEnum):
    APPROVAL = "approval"          # the policy asks a human before the next step
    DURATION = "duration"          # the policy soaks at this step for a while
    OPERATOR = "operator"          # `rollwise pause`
    MANUAL_EDIT = "manual-edit"    # someone changed the canary weight by hand
    INCONCLUSIVE = "inconclusive"  # no verdict by the step's deadline
    MISSING_DATA = "missing-data"  # metrics missing for longer than onMissingData.after
    UNROUTED = "unrouted"          # the serving layer sends the ready canary no traffic


@dataclass(frozen=True)
class Pause:
    reason: PauseReason
    since: datetime
    until: datetime | None = None          # a duration pause or an approval timeout
    message: str = ""
    reminded_at: datetime | None = None


@dataclass(frozen=True)
class Approval:
    step: int
    by: str
    via: str                               # "cli" or "slack"
    at: datetime


@dataclass(frozen=True)
class StepVerdict:
    """The analysis verdict that closed a step (passed) or ended the rollout (failed)."""

    step: int
    outcome: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class Decision:
    """The last thing the controller decided and why (shown by `rollwise status`)."""

    action: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class EventRecord:
    """A Kubernetes Event of the last committed transition, with its idempotency key.

    Kept in the state, written in the same request as the transition, so a controller
    that dies between that write and the Event records it after its restart: the same
    key, so an Event that did get recorded is not recorded twice."""

    key: str
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class RolloutState:
    """Everything needed to resume a rollout after a restart."""

    id: str                                # unique per rollout; keys every side effect
    policy: str
    spec_hash: str                         # the model spec being rolled out
    phase: Phase
    started_at: datetime
    phase_since: datetime
    storage_uri: str = ""
    baseline_storage_uri: str | None = None  # the stable model's URI, for lineage
    baseline_revision: str | None = None   # the stable revision the canary is judged against
    known_revision: str | None = None      # the latest created revision when it began
    revision: str | None = None            # the canary revision, once it was created
    step: int = 0
    step_started_at: datetime | None = None
    expected_percent: int | None = None    # what Rollwise last set; anything else is a hand edit
    pause: Pause | None = None
    approvals: tuple[Approval, ...] = ()
    verdicts: tuple[StepVerdict, ...] = ()
    missing_since: datetime | None = None
    last_verdict: str = ""                 # outcome: one-line reason
    last_decision: Decision | None = None
    # The analysis evidence, per check (controller.analysis.looks: blocks of counts per
    # interval, stable's history, the dispersion that tempers them); opaque here.
    evidence: Mapping[str, Any] = field(default_factory=dict)
    handled_commands: tuple[str, ...] = ()
    ending: Phase | None = None            # while rolling back: Failed or Aborted
    lineage_execution: int | None = None
    last_events: tuple[EventRecord, ...] = ()   # the Events of the last committed transition
    version: int = STATE_VERSION

    def evolve(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    def to_mapping(self) -> dict[str, Any]:
        encoded: dict[str, Any] = _encode(asdict(self))
        return encoded

    def to_json(self) -> str:
        return json.dumps(self.to_mapping(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        """Read a stored state; raise ValueError naming what is wrong with it. Fields
        other than the state's own (such as a seal) are ignored."""
        try:
            raw = json.loads(text)
        except ValueError as err:
            raise ValueError(f"unreadable rollout state: {err}") from err
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Any) -> RolloutState:
        try:
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            return _decode_state(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"unreadable rollout state: {type(err).__name__}: {err}") \
                from err


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("evidence must be a JSON object")
    return value


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_time(value: Any) -> datetime:
    parsed = _time(value)
    if parsed is None:
        raise ValueError("missing timestamp")
    return parsed


def _decode_state(raw: dict[str, Any]) -> RolloutState:
    pause = raw.get("pause")
    decision = raw.get("last_decision")
    return RolloutState(
        id=str(raw["id"]),
        policy=str(raw["policy"]),
        spec_hash=str(raw["spec_hash"]),
        phase=Phase(raw["phase"]),
        started_at=_required_time(raw["started_at"]),
        phase_since=_required_time(raw["phase_since"]),
        storage_uri=str(raw.get("storage_uri", "")),
        baseline_storage_uri=raw.get("baseline_storage_uri"),
        baseline_revision=raw.get("baseline_revision"),
        known_revision=raw.get("known_revision"),
        revision=raw.get("revision"),
        step=int(raw.get("step", 0)),
        step_started_at=_time(raw.get("step_started_at")),
        expected_percent=raw.get("expected_percent"),
        pause=None if pause is None else Pause(
            reason=PauseReason(pause["reason"]), since=_required_time(pause["since"]),
            until=_time(pause.get("until")), message=str(pause.get("message", "")),
            reminded_at=_time(pause.get("reminded_at"))),
        approvals=tuple(Approval(step=int(a["step"]), by=str(a["by"]), via=str(a["via"]),
                                 at=_required_time(a["at"])) for a in raw.get("approvals", ())),
        verdicts=tuple(StepVerdict(step=int(v["step"]), outcome=str(v["outcome"]),
                                   reason=str(v["reason"]), at=_required_time(v["at"]))
                       for v in raw.get("verdicts", ())),
        missing_since=_time(raw.get("missing_since")),
        last_verdict=str(raw.get("last_verdict", "")),
        last_decision=None if decision is None else Decision(
            action=str(decision["action"]), reason=str(decision["reason"]),
            at=_required_time(decision["at"])),
        evidence=_mapping(raw.get("evidence", {})),
        handled_commands=tuple(str(c) for c in raw.get("handled_commands", ())),
        ending=None if raw.get("ending") is None else Phase(raw["ending"]),
        lineage_execution=raw.get("lineage_execution"),
        last_events=tuple(EventRecord(key=str(e["key"]), reason=str(e["reason"]),
                                      message=str(e["message"]), warning=bool(e["warning"]))
                          for e in raw.get("last_events", ())),
        version=int(raw.get("version", STATE_VERSION)),
    )


# --- what the controller sees ------------------------------------------------------------


@dataclass(frozen=True)
class TrafficTarget:
    revision: str
    percent: int
    latest: bool = False
    tag: str | None = None


@dataclass(frozen=True)
class Observation:
    """What serves, as the serving layer reports it, reduced to what a rollout decision
    needs: the model spec's identity, the revisions (created, ready, rolled out: the
    stable one), why the latest one cannot become ready, and the split in force.

    Built from the object by its traffic router (``controller.routers``), from the
    serving layer's status, never from what Rollwise wrote; the spec's canary weight is
    kept apart (``canary_percent``) to tell a hand edit from Rollwise's own write.
    """

    spec_hash: str
    storage_uri: str
    canary_percent: int | None             # the canary weight the spec asks for (None: none)
    latest_created: str | None = None
    latest_ready: str | None = None
    latest_rolled_out: str | None = None
    previous_rolled_out: str | None = None
    revision_failure: str | None = None    # why the latest revision cannot become ready
    traffic: tuple[TrafficTarget, ...] = ()
    # Since when this controller process has been watching the object without a gap (None:
    # unknown). Timeouts count only watched time, never the controller's own absence.
    watched_since: datetime | None = None
    url: str | None = None                 # where the model is served, as status says
    # Why the serving layer sends the canary no traffic although it is ready and its weight
    # asks for some (a route that names only the stable): never judged as if it served.
    unrouted: str | None = None

    def percent_to(self, revision: str | None) -> int:
        return sum(t.percent for t in self.traffic if t.revision == revision)


CommandAction = Literal["approve", "promote", "abort", "retry", "pause", "resume"]
COMMAND_ACTIONS: tuple[CommandAction, ...] = ("approve", "promote", "abort", "retry", "pause",
                                              "resume")


@dataclass(frozen=True)
class Command:
    """An operator's instruction in ``rollwise.io/commands``.

    Who wrote it is never taken from the entry itself: the commands admission webhook
    (``controller.kube.webhook.stamp_commands``) overwrites ``by``, ``via`` and ``groups`` with
    the writer the API server authenticated (``via: kubernetes``) and seals the entry; the
    Slack handler, which checked the click's signature and the approver, seals its own
    (``via: slack``). The controller acts only on entries whose seal verifies."""

    id: str
    action: CommandAction
    by: str                                # Kubernetes username, or the Slack user
    at: datetime
    via: str = "kubernetes"                # "kubernetes" (any API client) or "slack"
    rollout: str | None = None             # the rollout it was meant for; None: the current one
    step: int | None = None                # approve: the step being approved
    reason: str = ""
    groups: tuple[str, ...] = ()           # the Kubernetes groups of the writer

    def to_mapping(self) -> dict[str, Any]:
        encoded: dict[str, Any] = _encode(asdict(self))
        return encoded

    def to_json(self) -> str:
        return json.dumps(self.to_mapping(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Command:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("a command is a JSON object")
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Command:
        """Read one entry; raise ValueError naming what is wrong with it."""
        action = raw["action"]
        if action not in COMMAND_ACTIONS:
            raise ValueError(f"unknown command action {action!r}")
        for key, limit in COMMAND_FIELD_LIMITS.items():
            if len(str(raw.get(key) or "")) > limit:
                raise ValueError(f"{key} longer than {limit} characters")
        groups = raw.get("groups") or []
        if not isinstance(groups, list) or len(groups) > MAX_COMMAND_GROUPS or any(
                not isinstance(g, str) or len(g) > COMMAND_FIELD_LIMITS["by"] for g in groups):
            raise ValueError(f"groups must be a list of at most {MAX_COMMAND_GROUPS} names")
        step = raw.get("step")
        at = _required_time(raw["at"])
        if at.utcoffset() is None:
            raise ValueError("at has no time zone")
        return cls(id=str(raw["id"]), action=action, by=str(raw["by"]), at=at,
                   via=str(raw.get("via", "kubernetes")), rollout=raw.get("rollout"),
                   step=None if step is None else int(step), reason=str(raw.get("reason", "")),
                   groups=tuple(groups))


# Bounds on what one command may carry: enough for any real id, user name and reason.
COMMAND_FIELD_LIMITS = {"id": 64, "by": 256, "via": 16, "rollout": 128, "reason": 1024}
MAX_COMMAND_GROUPS = 64
