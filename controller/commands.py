"""Operator commands as annotations: the one way a human (CLI or Slack) tells the
controller to approve, promote, abort, retry, pause or resume.

A command is written under its own key (``rollwise.io/command-<id>``), so two people
acting at once never overwrite each other; the controller removes the key in the same
patch that acts on it, and remembers the id so a replay acts once.
"""

from __future__ import annotations

from controller.rollout.state import Command
from controller.traffic import InferenceServices
from controller.traffic.kserve import command_annotation


def submit_command(isvcs: InferenceServices, namespace: str, name: str,
                   command: Command) -> None:
    """Write the command annotation (a merge patch touching only its own key)."""
    patch = {"metadata": {"annotations": {command_annotation(command.id): command.to_json()}}}
    isvcs.patch(namespace, name, patch)
