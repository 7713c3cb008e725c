"""The codec of every ``rollwise.io/*`` annotation: its key, its JSON format and its seal, in
one place. Objects in the field carry these values across upgrades, so the keys and
formats never change.

=====================================  =====================================  ===========
key                                    value                                  written by
=====================================  =====================================  ===========
``rollwise.io/policy``                 the policy's name                      users
``rollwise.io/rollout``                the rollout state, sealed              controller
``rollwise.io/commands``               pending operator commands: a JSON      CLI, Slack
                                       list, each entry sealed by the         (stamped by
                                       commands webhook or the Slack handler  the webhook)
``rollwise.io/last-good-predictor``    ``{"predictor": <spec>}`` sealed: the  controller
                                       spec recorded at the last promotion
``rollwise.io/slack-message``          ``{"rollout", "channel", "ts"}``       notifier
                                       sealed: the rollout's Slack message
``rollwise.io/model-artifact-id``      the model's MLMD artifact id           KFP hand-off
``rollwise.io/route``                  on a Deployment: its HTTPRoute's name  users
``rollwise.io/applied``                on an HTTPRoute or a canary            controller
                                       Deployment: the digest of what
                                       Rollwise last wrote there
=====================================  =====================================  ===========

The last two belong to the plain-Deployment router (``ROUTE_ANNOTATION``,
``APPLIED_ANNOTATION``, defined in ``controller.routers.deployment_gateway`` and
re-exported here); they are never on an InferenceService, so they are not in
``ANNOTATION_KEYS``.

Seals (``controller.rollout.seal``) prove that a value was written by Rollwise for this
object; each purpose has its own (``SEAL_*``), so a value sealed for one is refused for
another. Readers that only display (the CLI) read without a ``Sealer``, unverified.

The set of keys is fixed (``ANNOTATION_KEYS``): KServe copies InferenceService annotations
into the Knative revision template, so a changed annotation would create a new revision
unless its key is in the ``serviceAnnotationDisallowedList`` of KServe's
inferenceservice-config ConfigMap, which matches exact keys; the install adds all of them
(docs/operations.md).

Pure: JSON and seals, no I/O. Callers: ``managed`` (the reconciler's read and write),
``commands``, ``webhook``, the Slack notifier and interactions, the KFP hand-off, the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.errors import StateUnreadable
from controller.rollout.seal import Sealer
from controller.rollout.state import Command, RolloutState
from controller.routers.deployment_gateway import APPLIED_ANNOTATION as APPLIED_ANNOTATION
from controller.routers.deployment_gateway import ROUTE_ANNOTATION as ROUTE_ANNOTATION

POLICY_ANNOTATION = "rollwise.io/policy"
STATE_ANNOTATION = "rollwise.io/rollout"
COMMANDS_ANNOTATION = "rollwise.io/commands"
LAST_GOOD_ANNOTATION = "rollwise.io/last-good-predictor"
SLACK_MESSAGE_ANNOTATION = "rollwise.io/slack-message"
MODEL_ARTIFACT_ANNOTATION = "rollwise.io/model-artifact-id"
ANNOTATION_KEYS = (POLICY_ANNOTATION, STATE_ANNOTATION, COMMANDS_ANNOTATION,
                   LAST_GOOD_ANNOTATION, SLACK_MESSAGE_ANNOTATION, MODEL_ARTIFACT_ANNOTATION)

# What each sealed annotation is for: a value sealed for one purpose is refused for another.
SEAL_STATE, SEAL_LAST_GOOD, SEAL_COMMAND, SEAL_SLACK_MESSAGE = (
    "rollout", "last-good", "command", "slack-message")

# At most this many commands wait on one object. A person issues a handful; a list that
# grew past this (a script in a loop, or an attack) is cut to its newest entries, so the
# controller's own write, which rewrites the list, stays far below the API's 256 KiB limit
# on all annotations together.
MAX_PENDING_COMMANDS = 20


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    annotations: Mapping[str, str] = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations


# --- the rollout state -----------------------------------------------------------------


def read_state(text: str, uid: str, sealer: Sealer | None) -> RolloutState:
    """The rollout state in ``text``; with a sealer, only one Rollwise sealed for ``uid``.
    ValueError (or ``StateUnreadable``) naming the annotation otherwise."""
    try:
        if sealer is None:
            return RolloutState.from_json(text)
        return RolloutState.from_mapping(sealer.open(SEAL_STATE, uid, text,
                                                     what=STATE_ANNOTATION))
    except ValueError as err:
        raise ValueError(f"{STATE_ANNOTATION}: {err}") from err


def state_value(state: RolloutState, uid: str, sealer: Sealer) -> str:
    """The annotation text of ``state``, sealed for this object."""
    return sealer.seal_text(SEAL_STATE, uid, state.to_mapping())


# --- operator commands -----------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A command waiting in ``rollwise.io/commands``: the entry as it was written (kept
    verbatim, so a rewrite of the list keeps its seal) and what it says."""

    command: Command
    raw: Mapping[str, Any]


def raw_commands(text: str | None) -> list[Mapping[str, Any]]:
    """The entries of a commands annotation as written (JSON objects only), or []."""
    try:
        raw = json.loads(text) if text else []
    except ValueError:
        return []
    return [e for e in raw if isinstance(e, Mapping)] if isinstance(raw, list) else []


def read_commands(text: str | None, sealer: Sealer | None = None,
                  uid: str = "") -> tuple[list[Pending], list[str]]:
    """The pending commands (a JSON list under one fixed key) and why any were refused:
    unreadable, beyond ``MAX_PENDING_COMMANDS`` (the oldest go) or, with a sealer, not
    sealed for this object (written while the commands webhook was not called)."""
    if not text:
        return [], []
    try:
        raw = json.loads(text)
    except ValueError as err:
        return [], [f"{COMMANDS_ANNOTATION} is not JSON: {err}"]
    if not isinstance(raw, list):
        return [], [f"{COMMANDS_ANNOTATION} must be a JSON list"]
    pending, bad = [], []
    dropped = max(0, len(raw) - MAX_PENDING_COMMANDS)
    if dropped:
        bad.append(f"{COMMANDS_ANNOTATION}: {len(raw)} commands pending, more than "
                   f"{MAX_PENDING_COMMANDS}; the oldest {dropped} dropped")
    for i, entry in enumerate(raw[dropped:], start=dropped):
        where = f"{COMMANDS_ANNOTATION}[{i}]"
        try:
            if not isinstance(entry, dict):
                raise ValueError("a command is a JSON object")
            command = Command.from_mapping(entry)
        except (ValueError, KeyError, TypeError) as err:
            bad.append(f"{where}: {type(err).__name__}: {err}")
            continue
        if sealer is not None and not sealer.verify(SEAL_COMMAND, uid, entry):
            bad.append(f"{where}: {command.action} {command.id!r} refused: its writer is not "
                       "authenticated (no valid seal: written while the rollwise commands "
                       "admission webhook was not called?)")
            continue
        pending.append(Pending(command, entry))
    return pending, bad


def commands_value(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """The annotation value for these entries; None removes the key."""
    if not entries:
        return None
    return json.dumps(list(entries), separators=(",", ":"))


# --- the last promoted spec ------------------------------------------------------------


class NothingToRestore(ValueError):
    """No promoted spec Rollwise recorded (and sealed) is on this object."""


def last_good_value(spec: Mapping[str, Any], uid: str, sealer: Sealer) -> str:
    """The annotation text recording ``spec`` (a router's ``spec``) as the last good one."""
    return sealer.seal_text(SEAL_LAST_GOOD, uid, {"predictor": dict(spec)})


def open_last_good(annotations: Mapping[str, str], key: str, uid: str,
                   sealer: Sealer) -> dict[str, Any]:
    """The last promoted spec recorded on the object ``key``. Only a spec Rollwise recorded
    (sealed) for this object: a hand-written value (another model, a privileged service
    account) is refused with ``NothingToRestore``."""
    raw = annotations.get(LAST_GOOD_ANNOTATION)
    if not raw:
        raise NothingToRestore(f"{key}: no promoted predictor spec recorded "
                               f"({LAST_GOOD_ANNOTATION})")
    try:
        last_good = sealer.open(SEAL_LAST_GOOD, uid, raw, what=LAST_GOOD_ANNOTATION)["predictor"]
        if not isinstance(last_good, dict):
            raise StateUnreadable(f"{LAST_GOOD_ANNOTATION} holds no predictor spec")
    except (StateUnreadable, KeyError) as err:
        raise NothingToRestore(f"{key}: refusing to restore: {err}") from err
    return last_good


# --- the Slack message of a rollout ----------------------------------------------------


def slack_message_value(rollout: str, channel: str, ts: str, uid: str, sealer: Sealer) -> str:
    """The annotation text naming rollout ``rollout``'s Slack message, sealed."""
    return sealer.seal_text(SEAL_SLACK_MESSAGE, uid,
                            {"rollout": rollout, "channel": channel, "ts": ts})


def open_slack_message(text: str, rollout: str, uid: str,
                       sealer: Sealer) -> tuple[str, str] | None:
    """(channel, ts) of ``rollout``'s message; None when the annotation names an earlier
    rollout's. ``StateUnreadable`` (or KeyError, TypeError) when it is not one Rollwise
    sealed for this object."""
    raw = sealer.open(SEAL_SLACK_MESSAGE, uid, text, what=SLACK_MESSAGE_ANNOTATION)
    if raw["rollout"] != rollout:
        return None
    return str(raw["channel"]), str(raw["ts"])


# --- the model's lineage artifact ------------------------------------------------------


def model_artifact_annotations(artifact_id: int | None) -> dict[str, str]:
    """The annotation that records the model's MLMD artifact id (none when unknown)."""
    return {} if artifact_id is None else {MODEL_ARTIFACT_ANNOTATION: str(artifact_id)}


# --- everything Rollwise keeps on one object ---------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Stored:
    """What Rollwise keeps on one object that opted in (``rollwise.io/policy``).

    Read with a ``Sealer`` (the controller), the state and the commands are only what
    Rollwise sealed for this object: anything else is ``state_error`` / ``bad_commands``.
    Read without one (the CLI, which has no key), they are shown as written, unverified."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    policy: str
    state: RolloutState | None
    state_error: str | None                 # an unreadable or unsealed state, reported
    pending: tuple[Pending, ...]
    bad_commands: tuple[str, ...]          # why each refused entry was dropped
    annotations: Mapping[str, str] = field(default_factory=dict)
    verified: bool = False                 # read with a Sealer

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(p.command for p in self.pending)


def read_stored(obj: Mapping[str, Any], sealer: Sealer | None = None) -> Stored | None:
    """What Rollwise keeps on ``obj``, or None when it did not opt in."""
    meta = obj.get("metadata") or {}
    annotations = annotations_of(obj)
    policy = annotations.get(POLICY_ANNOTATION)
    if not policy:
        return None
    uid = str(meta.get("uid", ""))
    state, state_error = None, None
    if STATE_ANNOTATION in annotations:
        try:
            state = read_state(annotations[STATE_ANNOTATION], uid, sealer)
        except (ValueError, StateUnreadable) as err:
            state_error = str(err)
    pending, bad = read_commands(annotations.get(COMMANDS_ANNOTATION), sealer, uid)
    return Stored(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=uid,
        resource_version=meta.get("resourceVersion", ""), policy=policy, state=state,
        state_error=state_error, pending=tuple(pending), bad_commands=tuple(bad),
        annotations=dict(annotations), verified=sealer is not None)


def rollout_annotations(stored: Stored, state: RolloutState, handled: Sequence[str], *,
                        sealer: Sealer, last_good: Mapping[str, Any] | None = None
                        ) -> dict[str, str | None]:
    """The annotations of the controller's one write: the state, the commands left once
    ``handled`` ones (and refused ones) are gone, and the spec recorded at a promotion;
    each sealed for this object."""
    uid = stored.uid
    annotations: dict[str, str | None] = {STATE_ANNOTATION: state_value(state, uid, sealer)}
    if handled or stored.bad_commands:
        annotations[COMMANDS_ANNOTATION] = commands_value(
            [p.raw for p in stored.pending if p.command.id not in handled])
    if last_good is not None:
        annotations[LAST_GOOD_ANNOTATION] = last_good_value(last_good, uid, sealer)
    return annotations
