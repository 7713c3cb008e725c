"""A managed object as the reconciler reads it, and THE one write it sends.

``read_managed`` puts together what Rollwise keeps on the object (``annotations``) and
what serves, as the object's traffic router reads it (``controller.routers``).
``rollout_patch`` is the one JSON merge patch of a transition: the state, the consumed
commands and the recorded good spec (the annotation codec) with the router's spec part
(the traffic action), fenced by the resourceVersion read, so a stale controller's write
fails with 409 instead of acting, and a command added since the read is never lost.

Pure. Callers: the reconciler, the CLI (``rollwise status``), the lineage gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from controller.kube.annotations import (
    NothingToRestore,
    Stored,
    open_last_good,
    read_stored,
    rollout_annotations,
)
from controller.rollout.machine import RestoreSpec, SetCanary, TrafficAction
from controller.rollout.seal import Sealer
from controller.rollout.state import Observation, RolloutState
from controller.routers.base import KeepsObject, Ref, Related, TrafficRouter, choose


@dataclass(frozen=True, kw_only=True)
class Managed(Stored):
    """One object that opted in, with everything read from it: what Rollwise keeps on it,
    the router that drives it, and what serves."""

    router: TrafficRouter
    obj: Mapping[str, Any]                 # as the API server returned it
    observation: Observation
    related: Related = field(default_factory=dict)   # the objects the router named, as read

    @property
    def url(self) -> str | None:
        return self.observation.url


def read_managed(obj: Mapping[str, Any], routers: Sequence[TrafficRouter],
                 sealer: Sealer | None = None,
                 read: Callable[[Ref], Mapping[str, Any] | None] | None = None,
                 ) -> Managed | None:
    """The managed view of ``obj``, or None when it did not opt in. ``Unsupported`` when it
    opted in and none of ``routers`` can drive it. ``read`` (``Objects.related``) reads the
    other objects the router names; without it they count as absent."""
    stored = read_stored(obj, sealer)
    if stored is None:
        return None
    router = choose(routers, obj)
    related = {ref: None if read is None else read(ref) for ref in router.related(obj)}
    return Managed(**{f.name: getattr(stored, f.name) for f in fields(Stored)},
                   router=router, obj=obj, observation=router.observe(obj, related),
                   related=related)


def rollout_patch(managed: Managed, state: RolloutState, traffic: TrafficAction | None,
                  handled: Sequence[str] = (), *, sealer: Sealer,
                  promoted: bool = False) -> dict[str, Any]:
    """One JSON merge patch: traffic, state and consumed commands together, fenced by the
    resourceVersion read. With ``promoted``, the spec that serves is recorded (sealed) as
    the last good one; ``RestoreSpec`` puts that record back (``NothingToRestore`` when
    there is none Rollwise sealed for this object)."""
    router = managed.router
    last_good = None
    if isinstance(traffic, RestoreSpec):
        last_good = open_last_good(managed.annotations, managed.key, managed.uid, sealer)
    elif isinstance(traffic, SetCanary):
        # A router that pulls an unguarded change back into a canary puts the predictor
        # back to this (KServe Standard mode); None when there is none to put back.
        try:
            last_good = open_last_good(managed.annotations, managed.key, managed.uid, sealer)
        except NothingToRestore:
            last_good = None
    patch: dict[str, Any] = {"metadata": {
        "resourceVersion": managed.resource_version,
        "annotations": rollout_annotations(
            managed, state, handled, sealer=sealer,
            last_good=router.spec(managed.obj) if promoted else None)}}
    spec = None if traffic is None else router.write(managed.obj, traffic, last_good=last_good)
    if isinstance(router, KeepsObject):
        spec = {**router.steady(managed.obj, state), **(spec or {})}
    if spec:
        patch["spec"] = spec
    return patch
