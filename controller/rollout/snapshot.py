"""What side effects (lineage, notifications) are told after a committed transition.

Pure data. A snapshot carries the whole rollout state, so a side effect that failed or
was missed (crash, outage) is caught up from the next snapshot: each backend makes its
record *match* the snapshot (idempotent upsert keyed by the rollout id), rather than
appending deltas.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.rollout.machine import Event
from controller.rollout.state import RolloutState


@dataclass(frozen=True)
class RolloutSnapshot:
    namespace: str
    name: str
    uid: str
    policy: str
    state: RolloutState
    url: str | None = None                  # where the model is served (Observation.url)
    events: tuple[Event, ...] = ()          # what just happened (may be empty on catch-up)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
