"""Operator commands on a managed object: the one way a human (CLI or Slack) tells the
controller to approve, promote, abort, retry, pause or resume.

Commands wait in one annotation, ``rollwise.io/commands``, a JSON list: one fixed key,
because KServe would turn every new annotation key into a new Knative revision. A
command is appended with a read-modify-write fenced by resourceVersion (retried on 409),
so two people acting at once never lose each other's command; the entries already there
are written back verbatim (their seals intact). The controller removes the ones it
handled in the same patch that acts on them, and remembers their ids so that a replay
acts once.

Who wrote a command is established by the API server, not by the entry: the commands
admission webhook stamps each new entry with the authenticated writer and seals it
(``controller.kube.webhook.stamp_commands``). The Slack handler seals its own entries (it
checked the click's signature and the approver); pass its ``sealer`` here.

I/O through ``Objects`` (so the tests run it on ``fakes.FakeObjects``).
"""

from __future__ import annotations

from controller.errors import Conflict
from controller.kube import Objects
from controller.kube.annotations import (
    COMMANDS_ANNOTATION,
    MAX_PENDING_COMMANDS,
    SEAL_COMMAND,
    annotations_of,
    commands_value,
    raw_commands,
)
from controller.rollout.seal import Sealer
from controller.rollout.state import Command

ATTEMPTS = 5


class CommandNotDelivered(Exception):
    """The object is gone or kept changing; the message says which."""


def submit_command(objects: Objects, namespace: str, name: str, command: Command, *,
                   sealer: Sealer | None = None) -> None:
    """Append ``command`` (once: an id already waiting is not added again); sealed for the
    object when a ``sealer`` is given (the controller's own Slack commands)."""
    for _ in range(ATTEMPTS):
        obj = objects.get(namespace, name)
        if obj is None:
            raise CommandNotDelivered(f"{namespace}/{name}: no such object")
        meta = obj.get("metadata") or {}
        entries = raw_commands(annotations_of(obj).get(COMMANDS_ANNOTATION))
        if any(e.get("id") == command.id for e in entries):
            return
        entry = command.to_mapping()
        if sealer is not None:
            entry = sealer.seal(SEAL_COMMAND, str(meta.get("uid", "")), entry)
        # The list is bounded (the controller drops the oldest beyond it too).
        waiting = [*entries, entry][-MAX_PENDING_COMMANDS:]
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                              "annotations": {COMMANDS_ANNOTATION: commands_value(waiting)}}}
        try:
            objects.patch(namespace, name, patch)
            return
        except Conflict:
            continue
    raise CommandNotDelivered(f"{namespace}/{name} kept changing; command {command.id} "
                              f"not delivered after {ATTEMPTS} attempts")
