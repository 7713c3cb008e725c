"""Test fixtures shared by the unit tests: the seal key, sealed states, and the analyzer's
fake. The Kubernetes fakes ship with the controller (``controller.kube.fakes``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from controller.judging import AnalysisRequest
from controller.kube.annotations import SEAL_STATE, STATE_ANNOTATION
from controller.rollout.machine import Judgement
from controller.rollout.seal import Sealer
from controller.rollout.state import RolloutState

# The seal key of every unit test (the controller's real one comes from
# controller.kube.sealkey).
TEST_SEALER = Sealer([b"rollwise unit tests seal key, 32+ bytes long"])


def sealed_state(state: RolloutState, uid: str) -> str:
    """The annotation text the controller writes for ``state`` on the object ``uid``."""
    return TEST_SEALER.seal_text(SEAL_STATE, uid, state.to_mapping())


def put_state(obj: dict[str, Any], state: RolloutState) -> dict[str, Any]:
    """Give ``obj`` the sealed state annotation, as the controller would have written it."""
    obj["metadata"].setdefault("annotations", {})[STATE_ANNOTATION] = sealed_state(
        state, obj["metadata"]["uid"])
    return obj


class FakeAnalyzer:
    def __init__(self, judgement: Judgement | None = None) -> None:
        self.judgement = judgement
        self.requests: list[AnalysisRequest] = []

    def judge(self, requests: Sequence[AnalysisRequest],
              now: datetime) -> Mapping[str, Judgement]:
        self.requests += requests
        if self.judgement is None:
            return {}
        return {r.key: self.judgement for r in requests}
