"""Who wrote what, and when: the API server's audit log read as the controller's requests,
and the replicas' own logs and metrics. Shared by the leader tests (tests/e2e/
test_leader_e2e.py) and the replicas chaos test (tests/chaos/test_replicas_chaos.py).

Every replica runs as the controller's ServiceAccount, and its requests carry its own
User-Agent (``rollwise/<version> (<identity>)``, ``controller.kube.client.user_agent``), so
the audit log tells the replicas apart: ``Call.agent``. The Lease's holder at a moment is
the agent of the last successful Lease write completed by then; what a replica may write
while it holds it is said by ``split_brain_writes``, from the rule of ``controller.leader``
(a replica believes it leads for ``renew_deadline`` after sending its last successful
renewal, no longer).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

import simulations.world
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.kube.controlplane import Cluster, ControlPlane
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import wait_for

# Verbs that change an object, as the audit log spells them.
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# What the controller manages: a write there by a replica without the Lease is split brain.
MANAGED = frozenset({"inferenceservices"})


@contextlib.contextmanager
def world_with_plane(config: WorldConfig,
                     binaries: Binaries) -> Iterator[tuple[ControlPlane, World]]:
    """A World, and the ControlPlane under it (which World keeps to itself: it is caught
    as World enters it), for tests that stop and start the API server."""
    planes: list[ControlPlane] = []

    class Caught(ControlPlane):
        def __enter__(self) -> Cluster:
            planes.append(self)
            return super().__enter__()

    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(simulations.world, "ControlPlane", Caught)
            world = stack.enter_context(World(config, binaries=binaries))
        yield planes[0], world


@dataclass(frozen=True)
class Call:
    """One completed request of the controller's service account, from the audit log."""

    received: datetime
    completed: datetime
    agent: str
    verb: str
    resource: str
    code: int
    name: str = ""
    namespace: str = ""

    @property
    def succeeded(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return (f"{self.agent} {self.verb} {self.resource} {self.namespace}/{self.name} -> "
                f"{self.code} (received {self.received.isoformat()}, completed "
                f"{self.completed.isoformat()})")


def controller_calls(world: World, since: datetime) -> list[Call]:
    user = (f"system:serviceaccount:{world.cluster.controller_namespace}:"
            f"{world.cluster.controller_service_account}")
    calls = []
    for line in world.audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != user:
            continue
        received = datetime.fromisoformat(event["requestReceivedTimestamp"])
        if received >= since:
            ref = event.get("objectRef") or {}
            calls.append(Call(received, datetime.fromisoformat(event["stageTimestamp"]),
                              event.get("userAgent", ""), event["verb"],
                              ref.get("resource", ""),
                              int(event.get("responseStatus", {}).get("code", 0)),
                              ref.get("name", ""), ref.get("namespace", "")))
    return sorted(calls, key=lambda call: call.completed)


def lease_writes(calls: Iterable[Call]) -> list[Call]:
    """The successful Lease writes (acquisitions and renewals), in completion order."""
    return [c for c in calls if c.resource == "leases" and c.verb in ("create", "update")
            and c.code in (200, 201)]


def managed_writes(calls: Iterable[Call], resources: frozenset[str] = MANAGED) -> list[Call]:
    """The successful writes to managed objects (or to ``resources``), in completion order."""
    return [c for c in calls if c.resource in resources and c.verb in WRITES and c.succeeded]


def written_before_reacquiring(calls: Iterable[Call], agent: str, since: datetime) -> list[Call]:
    """The managed writes of the replica whose User-Agent contains ``agent`` received from
    ``since`` (a thaw) until its next successful Lease write: what a replica that lost the
    Lease while frozen must never make."""
    mine = [c for c in calls if agent in c.agent and c.received >= since]
    again = min((c.received for c in lease_writes(mine)), default=None)
    return [c for c in managed_writes(mine) if again is None or c.received < again]


def holders(calls: Iterable[Call]) -> list[str]:
    """The Lease's holders in order, one entry per change of holder."""
    writes = lease_writes(calls)
    return [w.agent for i, w in enumerate(writes) if i == 0 or writes[i - 1].agent != w.agent]


def split_brain_writes(calls: Iterable[Call], renew_deadline: float,
                       resources: frozenset[str] = MANAGED) -> list[str]:
    """Every successful write to a managed object made by a replica that did not hold the
    Lease then, described: the last successful Lease write completed before the write was
    received must be the writer's own, received at most ``renew_deadline`` before it (the
    writer believes it leads for renew_deadline after SENDING that renewal, which is no
    later than the API server received it: the one margin allowed), and no other replica
    may have written the Lease before the write completed."""
    calls = list(calls)
    leases = lease_writes(calls)
    deadline = timedelta(seconds=renew_deadline)
    found = []
    for write in managed_writes(calls, resources):
        before = [w for w in leases if w.completed <= write.received]
        if not before or before[-1].agent != write.agent:
            holder = before[-1].agent if before else "nobody"
            found.append(f"{write}: the Lease was {holder}'s")
            continue
        if write.received > before[-1].received + deadline:
            late = (write.received - before[-1].received).total_seconds()
            found.append(f"{write}: {late:.3f} s after its last renewal was received "
                         f"(renew deadline {renew_deadline:g} s)")
            continue
        taken = [w for w in leases if write.received < w.completed <= write.completed
                 and w.agent != write.agent]
        if taken:
            found.append(f"{write}: completed after {taken[0].agent} took the Lease "
                         f"({taken[0].completed.isoformat()})")
    return found


def assert_writes_follow_the_lease(world: World, since: datetime) -> list[str]:
    """Every successful InferenceService patch since ``since`` comes from the replica that
    made the last successful Lease write before it was received and before it completed.
    Returns the writers in order (one entry per change of writer)."""
    calls = controller_calls(world, since)
    leases = lease_writes(calls)
    patches = [c for c in calls if c.resource == "inferenceservices" and c.verb == "patch"
               and c.code == 200]
    assert patches, "no successful InferenceService patch in the audit log"

    def holder(at: datetime) -> str | None:
        before = [w.agent for w in leases if w.completed <= at]
        return before[-1] if before else None

    for patch in patches:
        assert holder(patch.received) == holder(patch.completed) == patch.agent, (
            f"{patch.agent} patched at {patch.received.isoformat()} while the Lease was "
            f"{holder(patch.received)}'s")
    writers = [p.agent for i, p in enumerate(patches) if i == 0 or patches[i - 1].agent != p.agent]
    changes = holders(calls)
    assert len(writers) <= len(changes), (writers, changes)
    return writers


def records(controller: ControllerProcess) -> list[dict[str, str]]:
    """The replica's JSON log lines (a line that is not JSON, e.g. cut by a kill, is left out)."""
    found = []
    for line in controller.log_file.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            if isinstance(record := json.loads(line), dict):
                found.append(record)
    return found


def identity_of(controller: ControllerProcess) -> str:
    """The replica identity its elector logs (and puts in its User-Agent)."""
    def logged() -> str | None:
        for record in records(controller):
            if "identity" in record:
                return str(record["identity"])
        return None
    found: str = wait_for(logged, 20, "the replica's identity in its log", controller.tail)
    return found


def stopped_leading(controller: ControllerProcess) -> list[dict[str, str]]:
    return [record for record in records(controller) if record.get("event") == "stopped leading"]


def leading(controller: ControllerProcess) -> bool:
    return "rollwise_leader 1.0" in controller.metrics()


def now_utc() -> datetime:
    return datetime.now().astimezone()
