"""The Kubernetes seam: everything Rollwise says to the API server, and how it reads back
what it wrote.

The Protocols below are what the rest of the controller depends on; each has a real
implementation on the official ``kubernetes`` client and an in-memory fake shipped in
``fakes`` (as httpx ships its mock transport), which the unit tests use.

=====================  ===================================================  =========
module                 what                                                  I/O
=====================  ===================================================  =========
``client``             connection (kubeconfig or in-cluster), ``KubeObjects``  I/O
                       (list/get/merge-patch/watch one resource), errors
                       translated into ``controller.errors``
``annotations``        the codec of EVERY ``rollwise.io/*`` annotation: keys,  pure
                       formats, seals
``managed``            an opted-in object as the reconciler reads it, and THE  pure
                       one fenced merge patch (annotations + the router's spec)
``events``             idempotent Events on the managed objects                I/O
``leases``             the Lease adapter under ``controller.leader``           I/O
``children``           the objects a router makes beside its own (a canary     I/O
                       Deployment and Service, a route's weights), written
                       level-triggered from the committed state
``commands``           operator commands appended with a fenced read-modify-   I/O
                       write (through ``Objects``)
``webhook``            the admission webhooks' AdmissionReview logic           pure
``sealkey``            where the seal key comes from (file or Secret)          I/O
``fakes``              ``FakeObjects``, ``FakeChildren``, ``FakeEvents``,      memory
                       ``InMemoryLeases``
=====================  ===================================================  =========

This module imports no client library: importing a pure module of the package (or the
fakes) never loads ``kubernetes``. (No ``from __future__ import annotations`` here: it
would bind the name ``annotations`` in this package, hiding the ``annotations`` module
from ``from controller.kube import annotations``.)
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from controller.routers.base import Ref, Write


class Objects(Protocol):
    """The objects of one resource (the one a traffic router drives) in the watched
    namespaces: the slice of the API the reconciler, the CLI and the command writers need.
    ``KubeObjects`` on the API server, ``CachedObjects`` on an informer's cache of it
    (what the daemon reads), ``FakeObjects`` in memory."""

    def list(self) -> list[Mapping[str, Any]]:
        """Every object in the watched namespaces; KubeError when they cannot be listed."""

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """One object, or None when it is gone."""

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Apply a JSON merge patch; raise Conflict on a stale resourceVersion, Rejected when
        the API server refuses the write as invalid (e.g. annotations over 256 KiB) or an
        admission webhook denies it (403), KubeError for any other failure."""

    def related(self, ref: Ref) -> Mapping[str, Any] | None:
        """Another object a traffic router reads to see what serves (``ref`` names its
        resource), or None when it is absent; KubeError when it cannot be read."""


class ChildWriter(Protocol):
    """The objects a router makes beside its own (``routers.base.HasChildren``):
    ``children.KubeChildren`` on the API server, ``fakes.FakeChildren`` in memory."""

    def apply(self, writes: Sequence[Write]) -> None:
        """Send ``writes`` in order; ``Conflict`` when a fenced patch finds its object
        changed, ``KubeError`` for any other failure (the rest are not sent). A create of
        an object that exists and a delete of one that is gone are no-ops."""


class EventRecorder(Protocol):
    def record(self, namespace: str, name: str, uid: str, *, key: str, reason: str,
               message: str, warning: bool, at: datetime) -> None:
        """Record an Event on the object; ``key`` makes it idempotent."""


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says about leadership. ``resource_version`` is None until stored."""

    holder: str | None
    lease_duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    lease_transitions: int = 0
    resource_version: str | None = None


class LeaseClient(Protocol):
    """The Lease seam of ``controller.leader``: ``KubeLeases`` on the API server,
    ``InMemoryLeases`` in tests."""

    def get(self, namespace: str, name: str) -> LeaseRecord | None:
        """The Lease, or None when there is none."""

    def create(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        """Create the Lease; LeaseConflict if it exists."""

    def replace(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        """Replace it if ``record.resource_version`` is still current, else LeaseConflict."""


class OnError(Protocol):
    """Told the verb of every failed API call (the ``rollwise_kubernetes_api_errors_total``
    metric)."""

    def __call__(self, verb: str) -> None: ...
