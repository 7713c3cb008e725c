"""The ``TrafficRouter`` Protocol: what a rollout needs from the layer that serves the model.

In the style of Argo Rollouts' traffic routers (``rollout/trafficrouting``: set weight,
verify weight, type), one module per way of serving. A router:

- names the objects it drives (``resource``: API group, version, plural, kind) and says
  why it cannot drive one (``supports``: a reason, never silence);
- names the other objects it must read to see what serves (``related``: the HTTPRoutes of
  a Standard-mode InferenceService), which ``controller.kube`` reads for it;
- reads what serves (``observe``, from the object and those related objects): stable and
  canary revisions, readiness, the split in force as the serving layer reports it, not as
  Rollwise wrote it;
- says what "the spec" of a model version is (``spec``: hashed to tell versions apart,
  recorded at a promotion, put back by ``RestoreSpec``);
- builds the spec part of THE one fenced write (``write``: set a weight, promote, roll
  back, restore) and the admission webhook's hold of a new model (``hold``);
- says whether the serving layer reports a promotion or a rollback in effect
  (``in_effect``, the state machine's ``Serving``), and how messages name its weight.

Pure: objects in as the API returns them (dicts), desired state out; the call that writes
is ``controller.kube``'s, together with the rollout state. A router whose writes go beyond
that one patch (a canary Deployment to create) keeps those calls in ``controller.kube``.
Callers: the reconciler, the state machine (through ``Serving``), the admission webhook,
the CLI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from controller.errors import Unsupported
from controller.rollout.machine import Serving, TrafficAction
from controller.rollout.state import Observation, RolloutState


@dataclass(frozen=True)
class Resource:
    """A Kubernetes resource, as a client addresses it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class Ref:
    """Another object a router reads to see what serves (``TrafficRouter.related``)."""

    resource: Resource
    namespace: str
    name: str
    # A label selector ("" for all): the objects of ``resource`` in ``namespace`` that match
    # it, read as one List (``{"items": [...]}``) instead of the object ``name``.
    selector: str | None = None


Related = Mapping[Ref, Mapping[str, Any] | None]
"""The related objects as read (None: absent), by the ``Ref`` that named them."""


class TrafficRouter(Serving, Protocol):
    """One way of serving a model, driven through its object's spec and read from its status.
    Every method is pure; ``obj`` is the object as the API server returns it."""

    @property
    def name(self) -> str:
        """Names the router in messages and logs (``kserve-knative``)."""

    @property
    def resource(self) -> Resource:
        """The resource of the objects it drives."""

    def supports(self, obj: Mapping[str, Any]) -> str | None:
        """Why this router cannot drive ``obj`` (its serving mode, a missing field), or None
        when it can."""

    def spec(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """The model version ``obj`` asks for, without the traffic fields Rollwise writes:
        what ``spec_hash`` identifies and what a promotion records as the last good spec."""

    def related(self, obj: Mapping[str, Any]) -> tuple[Ref, ...]:
        """The other objects ``observe`` needs (read by ``controller.kube`` just before)."""

    def observe(self, obj: Mapping[str, Any], related: Related | None = None) -> Observation:
        """What serves, from the serving layer's status and the ``related`` objects it named
        (``watched_since`` left unset)."""

    def write(self, obj: Mapping[str, Any], action: TrafficAction, *,
              last_good: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``spec`` part of the one merge patch that carries ``action``; ``last_good``
        (a ``spec`` recorded at a promotion) is what ``RestoreSpec`` puts back."""

    def hold(self, obj: Mapping[str, Any], percent: int, *,
             previous: Mapping[str, Any] | None = None) -> list[dict[str, Any]] | None:
        """The admission JSON patch that holds a new model in ``obj`` at ``percent``, or
        None when ``obj`` already asks for that; ``previous`` is the object before the
        update (what a router that moves the new model elsewhere puts back)."""


@dataclass(frozen=True)
class Write:
    """One write of an object a router makes beside its own (a canary Deployment, a route):
    ``create`` a body, merge-``patch`` (fenced by the ``metadata.resourceVersion`` in the
    body, when it has one) or ``delete``. ``controller.kube.children`` sends them."""

    verb: str                     # "create" | "patch" | "delete"
    resource: Resource
    namespace: str
    name: str
    body: Mapping[str, Any] | None = None


@runtime_checkable
class HasChildren(Protocol):
    """A router whose rollout needs objects beside its own, made level-triggered from the
    committed rollout state (the canary Deployment and Service, the route's backendRefs)."""

    def children(self, obj: Mapping[str, Any], related: Related,
                 state: RolloutState | None) -> tuple[Write, ...]:
        """The writes, in order, that make those objects match ``state`` (none when they
        already do); ``related`` is what ``related(obj)`` named, as read."""


@runtime_checkable
class KeepsObject(Protocol):
    """A router whose object carries fields of its own under a rollout state (a Deployment
    kept paused): merged into every write of the object, under the traffic action's."""

    def steady(self, obj: Mapping[str, Any], state: RolloutState) -> dict[str, Any]:
        """The ``spec`` fields ``obj`` must carry under ``state`` that it does not yet."""


def spec_hash(spec: Mapping[str, Any]) -> str:
    """What identifies a model version: the hash of a router's ``spec`` (canonical JSON).
    Stored in the rollout state, so it never changes for a given spec."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()[:32]


def choose(routers: Sequence[TrafficRouter], obj: Mapping[str, Any]) -> TrafficRouter:
    """The first router of ``obj``'s kind that drives it; ``Unsupported`` with every such
    router's reason when none does."""
    reasons = []
    obj_kind = obj.get("kind")
    for router in routers:
        if obj_kind and router.resource.kind != obj_kind:
            continue        # another resource's router (an object without kind: any)
        why = router.supports(obj)
        if why is None:
            return router
        reasons.append(f"{router.name}: {why}")
    meta = obj.get("metadata") or {}
    kind = obj.get("kind") or (routers[0].resource.kind if routers else "object")
    raise Unsupported(f"{kind} {meta.get('namespace')}/{meta.get('name')} cannot be driven "
                      f"by Rollwise ({'; '.join(reasons) or 'no traffic router configured'})")
