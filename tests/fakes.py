"""In-memory fakes of the controller's adapters, shared by the unit tests."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from controller.judging import AnalysisRequest
from controller.rollout.machine import Judgement
from controller.rollout.seal import Sealer
from controller.rollout.state import COMMANDS_ANNOTATION, STATE_ANNOTATION, RolloutState
from controller.traffic import Conflict, Rejected
from controller.traffic.kserve import SEAL_STATE
from controller.webhook import stamp_commands

# The seal key of every unit test (the controller's real one comes from controller.sealkey).
TEST_SEALER = Sealer([b"rollwise unit tests seal key, 32+ bytes long"])


def sealed_state(state: RolloutState, uid: str) -> str:
    """The annotation text the controller writes for ``state`` on the object ``uid``."""
    return TEST_SEALER.seal_text(SEAL_STATE, uid, state.to_mapping())


def put_state(obj: dict[str, Any], state: RolloutState) -> dict[str, Any]:
    """Give ``obj`` the sealed state annotation, as the controller would have written it."""
    obj["metadata"].setdefault("annotations", {})[STATE_ANNOTATION] = sealed_state(
        state, obj["metadata"]["uid"])
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeInferenceServices:
    """Objects in memory with resourceVersion checks, recording every patch sent."""

    def __init__(self, *objects: dict[str, Any], commands_webhook: bool = True) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.patches: list[tuple[str, str, Mapping[str, Any]]] = []
        self.conflict_next = False
        self.rejected: dict[tuple[str, str], str] = {}   # (ns, name) -> the API's message
        # The commands admission webhook, as the API server would call it, and who the API
        # server says writes the next patches.
        self.commands_webhook = commands_webhook
        self.user, self.groups = "tester@example.com", ("system:authenticated",)

    def list(self) -> list[Mapping[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.values()]

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        current = self.objects[(namespace, name)]
        if (namespace, name) in self.rejected:
            raise Rejected(f"{namespace}/{name}: {self.rejected[(namespace, name)]}")
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if self.conflict_next or (wanted and wanted != current["metadata"]["resourceVersion"]):
            self.conflict_next = False
            raise Conflict("stale")
        self.patches.append((namespace, name, copy.deepcopy(dict(patch))))
        updated = merge_patch(current, patch)
        updated = self._admit(current, updated)
        updated["metadata"]["resourceVersion"] = str(int(current["metadata"]
                                                         ["resourceVersion"]) + 1)
        self.objects[(namespace, name)] = updated
        return copy.deepcopy(updated)


    def _admit(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """The commands webhook's stamp, when the commands annotation changed."""
        def commands(obj: Mapping[str, Any]) -> Any:
            return ((obj.get("metadata") or {}).get("annotations") or {}).get(
                COMMANDS_ANNOTATION)

        if not self.commands_webhook or commands(new) is None or commands(new) == commands(old):
            return new
        review = {"request": {"uid": "r", "operation": "UPDATE", "object": new,
                              "oldObject": old, "userInfo": {"username": self.user,
                                                             "groups": list(self.groups)}}}
        response = stamp_commands(review, TEST_SEALER)["response"]
        if not response["allowed"]:
            raise Rejected(response["status"]["message"])
        if "patch" in response:
            (op,) = json.loads(base64.b64decode(response["patch"]))
            new["metadata"]["annotations"][COMMANDS_ANNOTATION] = op["value"]
        return new


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


class FakeEvents:
    def __init__(self) -> None:
        self.recorded: list[dict[str, Any]] = []
        self._keys: set[str] = set()

    def record(self, namespace: str, name: str, uid: str, *, key: str, reason: str,
               message: str, warning: bool, at: datetime) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        self.recorded.append({"name": name, "reason": reason, "message": message,
                              "warning": warning})
