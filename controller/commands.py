"""Operator commands on the InferenceService: the one way a human (CLI or Slack) tells the
controller to approve, promote, abort, retry, pause or resume.

Commands wait in one annotation, ``rollwise.io/commands``, a JSON list: one fixed key,
because KServe would turn every new annotation key into a new Knative revision. A
command is appended with a read-modify-write fenced by resourceVersion (retried on 409),
so two people acting at once never lose each other's command; the controller removes the
ones it handled in the same patch that acts on them, and remembers their ids so that a
replay acts once.
"""

from __future__ import annotations

from controller.rollout.state import COMMANDS_ANNOTATION, Command
from controller.traffic import Conflict, InferenceServices
from controller.traffic.kserve import MAX_PENDING_COMMANDS, commands_value, read_commands

ATTEMPTS = 5


class CommandNotDelivered(Exception):
    """The InferenceService is gone or kept changing; the message says which."""


def submit_command(isvcs: InferenceServices, namespace: str, name: str,
                   command: Command) -> None:
    """Append ``command`` (once: an id already waiting is not added again)."""
    for _ in range(ATTEMPTS):
        obj = isvcs.get(namespace, name)
        if obj is None:
            raise CommandNotDelivered(f"{namespace}/{name}: no such InferenceService")
        meta = obj.get("metadata") or {}
        pending, _bad = read_commands((meta.get("annotations") or {}).get(COMMANDS_ANNOTATION))
        if any(c.id == command.id for c in pending):
            return
        # The list is bounded (the controller drops the oldest beyond it too).
        waiting = [*pending, command][-MAX_PENDING_COMMANDS:]
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                              "annotations": {COMMANDS_ANNOTATION: commands_value(waiting)}}}
        try:
            isvcs.patch(namespace, name, patch)
            return
        except Conflict:
            continue
    raise CommandNotDelivered(f"{namespace}/{name} kept changing; command {command.id} "
                              f"not delivered after {ATTEMPTS} attempts")
