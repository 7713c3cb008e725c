"""In-memory twins of the Kubernetes seam's Protocols, shipped with the controller (as httpx
ships its mock transport) so that every test of a caller runs on the same fakes and
asserts the exact requests sent.

- ``FakeObjects``: ``Objects`` with resourceVersion fencing, merge-patch semantics, 409 and
  4xx injection, every patch recorded, related objects in ``others``; optionally the
  commands admission webhook, called as the API server would call it.
- ``FakeChildren``: ``ChildWriter`` (controller.kube.children) on those related objects.
- ``FakeEvents``: ``EventRecorder``, idempotent by key like Event names.
- ``InMemoryLeases``: ``LeaseClient`` with fault injection (hangs, lost answers).

Memory only: no client library, no I/O.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from controller.errors import Conflict, KubeError, LeaseConflict, Rejected
from controller.kube import LeaseRecord
from controller.kube.annotations import COMMANDS_ANNOTATION, annotations_of
from controller.kube.webhook import stamp_commands
from controller.rollout.seal import Sealer
from controller.routers.base import Ref, Write


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


class FakeObjects:
    """``Objects`` in memory with resourceVersion checks, recording every patch sent.

    With ``commands_webhook`` (the controller's seal key), a patch that changes
    ``rollwise.io/commands`` goes through ``stamp_commands`` as the API server would send
    it there, written by ``user`` in ``groups``; set it to None for an API server where
    the webhook is not installed (or was bypassed)."""

    def __init__(self, *objects: dict[str, Any], commands_webhook: Sealer | None = None) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.patches: list[tuple[str, str, Mapping[str, Any]]] = []
        self.conflict_next = False
        self.rejected: dict[tuple[str, str], str] = {}   # (ns, name) -> the API's message
        self.commands_webhook = commands_webhook
        self.user, self.groups = "tester@example.com", ("system:authenticated",)
        self.others: dict[Ref, dict[str, Any]] = {}      # what ``related`` reads
        self.reads: list[Ref] = []

    def related(self, ref: Ref) -> Mapping[str, Any] | None:
        self.reads.append(ref)
        if ref.selector is not None:
            wanted = dict(pair.split("=", 1) for pair in ref.selector.split(",") if pair)
            return {"items": [copy.deepcopy(obj) for key, obj in sorted(
                self.others.items(), key=lambda kv: kv[0].name)
                if key.resource == ref.resource and key.namespace == ref.namespace
                and key.selector is None and all(
                    ((obj.get("metadata") or {}).get("labels") or {}).get(k) == v
                    for k, v in wanted.items())]}
        obj = self.others.get(ref)
        return copy.deepcopy(obj) if obj else None

    def list(self) -> list[Mapping[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.values()]

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        current = self.objects[(namespace, name)]
        if (namespace, name) in self.rejected:
            raise Rejected(f"{namespace}/{name}: {self.rejected[(namespace, name)]}", 422)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if self.conflict_next or (wanted and wanted != current["metadata"]["resourceVersion"]):
            self.conflict_next = False
            raise Conflict(f"{namespace}/{name} changed since it was read", 409)
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
            return annotations_of(obj).get(COMMANDS_ANNOTATION)

        sealer = self.commands_webhook
        if sealer is None or commands(new) is None or commands(new) == commands(old):
            return new
        review = {"request": {"uid": "r", "operation": "UPDATE", "object": new,
                              "oldObject": old, "userInfo": {"username": self.user,
                                                             "groups": list(self.groups)}}}
        response = stamp_commands(review, sealer)["response"]
        if not response["allowed"]:
            raise Rejected(response["status"]["message"], 400)
        if "patch" in response:
            (op,) = json.loads(base64.b64decode(response["patch"]))
            new["metadata"]["annotations"][COMMANDS_ANNOTATION] = op["value"]
        return new


class FakeChildren:
    """``ChildWriter`` in memory, on the related objects of a ``FakeObjects`` (its
    ``others``): creates get a uid and resourceVersion 1, patches are merge patches fenced
    by a ``metadata.resourceVersion`` in them, every write is recorded in ``writes``."""

    def __init__(self, objects: FakeObjects) -> None:
        self.objects = objects
        self.writes: list[Write] = []
        self.fail_next: Exception | None = None
        self._uids = itertools.count(1)

    def apply(self, writes: Sequence[Write]) -> None:
        for write in writes:
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            ref = Ref(write.resource, write.namespace, write.name)
            current = self.objects.others.get(ref)
            if write.verb == "create":
                self.writes.append(write)
                if current is None:
                    body = copy.deepcopy(dict(write.body or {}))
                    body["metadata"] = {**body.get("metadata", {}), "resourceVersion": "1",
                                        "uid": f"child-{next(self._uids)}", "generation": 1}
                    self.objects.others[ref] = body
            elif write.verb == "delete":
                self.writes.append(write)
                self.objects.others.pop(ref, None)
            else:
                if current is None:
                    raise KubeError(f"cannot patch {write.resource.kind} {write.namespace}/"
                                    f"{write.name}: HTTP 404: not found", 404)
                patch = write.body or {}
                wanted = (patch.get("metadata") or {}).get("resourceVersion")
                version = current["metadata"].get("resourceVersion")
                if wanted and wanted != version:
                    raise Conflict(f"{write.resource.kind} {write.namespace}/{write.name} "
                                   "changed since it was read", 409)
                self.writes.append(write)
                updated = merge_patch(current, patch)
                updated["metadata"]["resourceVersion"] = str(int(version or 0) + 1)
                if "spec" in patch:
                    updated["metadata"]["generation"] = int(
                        current["metadata"].get("generation") or 1) + 1
                self.objects.others[ref] = updated


class FakeEvents:
    """``EventRecorder`` in memory: an Event is recorded once per key, as the API server
    refuses a second Event of the same name."""

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


Interceptor = Callable[[str, str], None]
"""Called with (verb, stage): stage "request" before the store applies a call, "response"
after it applied it and before the caller gets the answer. It may block (a slow or hung
API server) or raise (a failed request, or a lost answer to an applied write)."""


class InMemoryLeases:
    """``LeaseClient`` in memory with fault injection, for tests. Thread-safe. Verbs are
    "get", "create", "replace". ``fail_next`` queues exceptions; ``interceptor`` sees
    every call at both stages (delays, hangs, pauses, lost answers)."""

    def __init__(self, interceptor: Interceptor | None = None) -> None:
        self.interceptor = interceptor
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str], LeaseRecord] = {}
        self._versions = itertools.count(1)
        self._faults: deque[tuple[str | None, str, BaseException]] = deque()

    def fail_next(self, *errors: BaseException, verb: str | None = None,
                  after_applying: bool = False) -> None:
        """The next calls (of ``verb``, or any) raise these, in order; ``after_applying``:
        the store applies the call first, and the answer is lost."""
        with self._lock:
            stage = "response" if after_applying else "request"
            self._faults.extend((verb, stage, error) for error in errors)

    def stored(self, namespace: str, name: str) -> LeaseRecord | None:
        """What the store holds now (no faults, not recorded in ``calls``)."""
        with self._lock:
            return self._leases.get((namespace, name))

    def put(self, namespace: str, name: str, record: LeaseRecord | None) -> None:
        """Write or delete the Lease unconditionally, as a person with kubectl would."""
        with self._lock:
            if record is None:
                self._leases.pop((namespace, name), None)
            else:
                self._store(namespace, name, record)

    def get(self, namespace: str, name: str) -> LeaseRecord | None:
        self._stage("get", "request")
        with self._lock:
            found = self._leases.get((namespace, name))
        self._stage("get", "response")
        return found

    def create(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        self._stage("create", "request")
        with self._lock:
            if (namespace, name) in self._leases:
                raise LeaseConflict(f"Lease {namespace}/{name} already exists")
            written = self._store(namespace, name, record)
        self._stage("create", "response")
        return written

    def replace(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        self._stage("replace", "request")
        with self._lock:
            current = self._leases.get((namespace, name))
            if current is None or current.resource_version != record.resource_version:
                raise LeaseConflict(f"Lease {namespace}/{name} changed since it was read")
            written = self._store(namespace, name, record)
        self._stage("replace", "response")
        return written

    def _store(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        written = replace(record, resource_version=str(next(self._versions)))
        self._leases[(namespace, name)] = written
        return written

    def _stage(self, verb: str, stage: str) -> None:
        if stage == "request":
            with self._lock:
                self.calls.append(verb)
        if self.interceptor is not None:
            self.interceptor(verb, stage)
        with self._lock:
            for fault in self._faults:
                if fault[0] in (None, verb) and fault[1] == stage:
                    self._faults.remove(fault)
                    raise fault[2]
