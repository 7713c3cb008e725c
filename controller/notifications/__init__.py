"""Telling people: one message per rollout, updated in place, with a thread reply per
transition; approval buttons where a step waits for a human.

The boundary is ``Notifier`` (one method); when nothing is configured the daemon simply
registers no notifier. Slack is the first implementation (``slack``); approvals that come
back from Slack are turned into the same ``Command`` annotations the CLI writes.
"""

from __future__ import annotations

from typing import Protocol

from controller.rollout.snapshot import RolloutSnapshot


class Notifier(Protocol):
    def notify(self, snapshot: RolloutSnapshot) -> None:
        """Bring the rollout's message up to date and post its new events. Must not raise
        for delivery problems: it retries in the background and reports in metrics."""

