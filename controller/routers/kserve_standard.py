"""KServe InferenceServices in Standard (RawDeployment) mode, driven through ``spec.canary[]``.

Pure: an InferenceService and its HTTPRoutes (dicts, as the API returns them) in, an
``Observation`` and the spec part of the one merge patch out. The facts, from KServe at
aaac4e29 (after v0.20.0; ../shared/reference/kserve/standard-mode-canary.md):

- a new model is ONE canary entry that Rollwise names (``rw-`` and the model spec's hash:
  a DNS label, the same across restarts) with the new model (``model.name`` is
  ``kserve-container``, as the 0.20 CRD requires) and ``trafficPercent`` as the weight;
  KServe runs it as the Deployment and Service ``{isvc}-{name}-predictor``. Revisions are
  those Deployment names (the pods are ``<deployment>-<pod-template-hash>-<suffix>``,
  which the ``kserve-standard`` metrics preset maps back);
- promotion without restart: ``spec.predictor.name`` set to the canary's name, the
  canary's model written into the predictor and the entry removed, in one write; the
  canary's Deployment becomes the stable one with the same pod template;
- rollback: ``trafficPercent: 0`` (a dark launch). Removing the entry would also stop the
  canary, but it would change the spec back to the stable model, so the rollout's model
  would vanish from the object and the next read would look like a new deploy of the old
  model; at 0 the spec keeps naming the refused model, as Knative mode's 0% does, and
  KServe scales the canary to ``ceil(replicas x 0 / 100) = 0`` pods, so it holds nothing;
- ``onFailure.restorePreviousSpec``: a canary rollout never changes the stable predictor,
  so the last promoted spec still serves; restoring writes the stable back only when it
  was edited since (nothing otherwise);
- the split in force is read from the HTTPRoutes ``{isvc}`` and ``{isvc}-predictor``
  (``backendRefs`` weights, a missing weight being 1) once a parent accepted the route's
  current generation, and ``status.canaryStatuses[].ready``: KServe gives a canary that is
  not ready no weight. KServe v0.20.0 itself (before kserve#5912) routes only to the stable
  Service: a ready canary whose Service never appears in the route is ``unrouted``, which
  pauses the rollout instead of judging a canary that never served;
- KServe before 0.20 has no ``spec.canary``: the API server drops the field. Rollwise then
  finds its rollout state expecting a canary on an object without one, and ``supports``
  refuses the object with that reason from then on (never a write loop);
- a change of the stable predictor's model applies at once in Standard mode: the admission
  webhook's ``hold`` puts the predictor back and makes the change the canary entry at the
  first step (only on an object whose schema shows it keeps ``spec.canary``, so a cluster
  before 0.20 never loses the edit); if the webhook was down, the controller's pull-back
  does the same from the last promoted spec.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary, TrafficAction
from controller.rollout.state import Observation, TrafficTarget
from controller.routers.base import Ref, Related, Resource, spec_hash
from controller.routers.kserve_knative import (
    GROUP,
    KIND,
    MODE_ANNOTATION,
    PLURAL,
    VERSION,
    storage_uri,
)

STANDARD_MODES = frozenset({"Standard", "RawDeployment"})   # RawDeployment: before v0.16
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
CANARY_PREFIX = "rw-"
CONTAINER = "kserve-container"
# rollwise.io/rollout (controller.kube.annotations.STATE_ANNOTATION; equal, checked by a
# test): read unverified here, only to refuse an object, never to act on it.
_STATE_ANNOTATION = "rollwise.io/rollout"
# Predictor fields that do not make a new model (replicas, autoscaling, the name): a change
# to them alone rolls out no new pods, and a canary entry must not carry them.
_NOT_MODEL = frozenset({"name", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                        "scaleMetricType", "autoScaling", "workerSpec"})
_EXPECTING_CANARY = frozenset({"Pending", "Blocked", "WaitingReady", "Progressing", "Paused",
                               "RollingBack"})


class KServeStandardError(ValueError):
    """A traffic action that cannot be written on this InferenceService as it is."""


def _predictor(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    predictor: Mapping[str, Any] = (obj.get("spec") or {}).get("predictor") or {}
    return predictor


def _entries(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("spec") or {}).get("canary") or [])


def _entry_name(entry: Mapping[str, Any]) -> str:
    return str((entry.get("predictor") or {}).get("name") or "")


def _ours(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Rollwise's canary entry (``supports`` refuses any other)."""
    return next((e for e in _entries(obj) if _entry_name(e).startswith(CANARY_PREFIX)), None)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """KServe's ``buildCanaryPredictor`` merge (mergo WithOverride): objects key by key, a
    non-empty value of ``override`` wins, lists whole."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif value not in (None, "", [], {}) or key not in out:
            out[key] = copy.deepcopy(value)
    return out


def _without_container_name(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``model.name: kserve-container`` is the same pod as no name (KServe merges it over
    the runtime's container); a stable predictor may not carry it."""
    out = dict(fields)
    model = out.get("model")
    if isinstance(model, Mapping) and model.get("name") == CONTAINER:
        out["model"] = {k: v for k, v in model.items() if k != "name"}
    return out


def _model(predictor: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a predictor that make its model (what a new pod template is made of)."""
    return _without_container_name({k: v for k, v in predictor.items() if k not in _NOT_MODEL})


def deployment(isvc: str, predictor_name: str | None) -> str:
    """``constants.PredictorServiceName``: the Deployment and Service of a predictor."""
    return f"{isvc}-{predictor_name}-predictor" if predictor_name else f"{isvc}-predictor"


def canary_name(model: Mapping[str, Any]) -> str:
    """The name of the canary entry for ``model`` (a ``_model``): a DNS label that any
    replica derives alike, so a restart or the webhook names the same entry."""
    return f"{CANARY_PREFIX}{spec_hash(model)[:8]}"


def _entry(model: Mapping[str, Any], changed: Mapping[str, Any], percent: int
           ) -> dict[str, Any]:
    fields = copy.deepcopy(dict(changed))
    if isinstance(fields.get("model"), Mapping):
        fields["model"] = {**fields["model"], "name": CONTAINER}
    return {"predictor": {"name": canary_name(model), **fields}, "trafficPercent": percent}


def _changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _model(new).items() if _model(old).get(k) != v}


def _restored(predictor: Mapping[str, Any], last: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that puts the model fields of ``last`` back into ``predictor``."""
    patch: dict[str, Any] = {k: None for k in _model(predictor) if k not in last}
    patch.update({k: v for k, v in _model(last).items() if _model(predictor).get(k) != v})
    return patch


def _mode(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(where, mode) as the object asks for it or KServe reports it; None: neither says."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    status = obj.get("status") or {}
    for where, mode in ((f"annotation {MODE_ANNOTATION}", annotations.get(MODE_ANNOTATION)),
                        ("status.deploymentMode", status.get("deploymentMode"))):
        if mode:
            return where, str(mode)
    return None


def _keeps_canary(obj: Mapping[str, Any]) -> bool:
    """Whether the stored object shows a schema with ``spec.canary`` (KServe 0.20+): the
    API server of an older KServe drops these fields."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return "canary" in spec or bool(_predictor(obj).get("name")) or (
        "canaryStatuses" in status)


def _accepted(route: Mapping[str, Any]) -> bool:
    generation = (route.get("metadata") or {}).get("generation")
    return any(c.get("type") == "Accepted" and c.get("status") == "True"
               and c.get("observedGeneration") == generation
               for parent in (route.get("status") or {}).get("parents") or ()
               for c in parent.get("conditions") or ())


def _split(route: Mapping[str, Any] | None) -> dict[str, int] | None:
    """Percent per Service of the route's catch-all rule, once a parent accepted its current
    generation; None while unknown (absent, not accepted yet)."""
    if route is None or not _accepted(route):
        return None
    for rule in (route.get("spec") or {}).get("rules") or ():
        refs = [r for r in rule.get("backendRefs") or () if (r.get("kind") or "Service")
                == "Service"]
        if refs:
            weights = [(str(r.get("name")), int(r.get("weight", 1))) for r in refs]
            total = sum(w for _, w in weights)
            return {n: round(100 * w / total) if total else 0 for n, w in weights}
    return {}


class KServeStandard:
    """The ``TrafficRouter`` of InferenceServices in Standard mode (``spec.canary[]``)."""

    name = "kserve-standard"
    resource = Resource(GROUP, VERSION, PLURAL, KIND)
    weight_field = "spec.canary[].trafficPercent"

    def supports(self, obj: Mapping[str, Any]) -> str | None:
        mode = _mode(obj)
        if mode is None or mode[1] not in STANDARD_MODES:
            where, found = mode or ("annotation or status.deploymentMode", "no Standard")
            return (f"it is served in {found} mode ({where}); this router drives Standard "
                    "(RawDeployment) mode through spec.canary[]")
        others = [_entry_name(e) for e in _entries(obj)
                  if not _entry_name(e).startswith(CANARY_PREFIX)]
        if others or len(_entries(obj)) > 1:
            named = ", ".join(others) or "a second rw- entry"
            return (f"spec.canary has entries Rollwise did not write ({named}): Rollwise "
                    "drives one canary of its own and leaves hand-made ones alone")
        if "canary" not in (obj.get("spec") or {}) and self._expects_canary(obj):
            return ("spec.canary is absent though Rollwise wrote a canary entry: KServe "
                    "before 0.20 has no spec.canary (the API server dropped the field), so "
                    "its traffic cannot be split; a model change Rollwise pulled back into "
                    "that canary is undone in the predictor too: re-apply it, it rolls out "
                    "at once without Rollwise (if the entry was removed by hand instead, "
                    f"remove the {_STATE_ANNOTATION} annotation to have Rollwise adopt what "
                    "serves)")
        return None

    @staticmethod
    def _expects_canary(obj: Mapping[str, Any]) -> bool:
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(_STATE_ANNOTATION)
        try:
            state = json.loads(raw) if raw else None
        except ValueError:
            return False
        return (isinstance(state, dict) and state.get("phase") in _EXPECTING_CANARY
                and state.get("expected_percent") is not None)

    def spec(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """The model the object asks to end up serving: the stable predictor merged with
        Rollwise's canary entry (as KServe builds the canary), without replica fields."""
        entry = _ours(obj)
        predictor = _predictor(obj)
        if entry is not None:
            predictor = _merge(predictor, entry.get("predictor") or {})
        return _model(predictor)

    def related(self, obj: Mapping[str, Any]) -> tuple[Ref, ...]:
        """The HTTPRoutes KServe writes: ``{isvc}`` and ``{isvc}-predictor``."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        return (Ref(HTTPROUTES, namespace, name),
                Ref(HTTPROUTES, namespace, deployment(name, None)))

    def observe(self, obj: Mapping[str, Any], related: Related | None = None) -> Observation:
        name = str((obj.get("metadata") or {}).get("name") or "")
        status = obj.get("status") or {}
        stable = deployment(name, _predictor(obj).get("name"))
        entry = _ours(obj)
        canary = None if entry is None else deployment(name, _entry_name(entry))
        ready = {str(s.get("name")): s.get("ready") is True
                 for s in status.get("canaryStatuses") or ()}
        stable_ready = any(c.get("type") == "PredictorReady" and c.get("status") == "True"
                           for c in status.get("conditions") or ())
        canary_ready = entry is not None and ready.get(_entry_name(entry), False)
        splits = [_split((related or {}).get(ref)) for ref in self.related(obj)]
        split = splits[0] if all(s == splits[0] for s in splits) else None
        latest = canary or stable
        traffic = () if split is None else tuple(
            TrafficTarget(revision=service, percent=percent, latest=service == latest)
            for service, percent in split.items())
        percent = None if entry is None else int(entry.get("trafficPercent") or 0)
        unrouted = None
        if canary_ready and percent and split is not None and canary not in split:
            unrouted = (f"KServe reports canary {_entry_name(entry or {})} ready at {percent}% "
                        f"but HTTPRoute {name} routes only to {', '.join(split) or 'nothing'} "
                        "(KServe v0.20.0 does not split Standard-mode traffic: route weights "
                        "came after it, kserve#5912)")
        return Observation(
            spec_hash=spec_hash(self.spec(obj)),
            storage_uri=storage_uri(self.spec(obj)),
            canary_percent=percent,
            latest_created=latest,
            latest_ready=canary if canary_ready else (stable if stable_ready else None),
            latest_rolled_out=stable,
            traffic=traffic,
            url=status.get("url"),
            unrouted=unrouted,
        )

    def write(self, obj: Mapping[str, Any], action: TrafficAction, *,
              last_good: Mapping[str, Any] | None = None) -> dict[str, Any]:
        entry = _ours(obj)
        predictor = _predictor(obj)
        if isinstance(action, RestoreSpec):
            if last_good is None:
                raise KServeStandardError("RestoreSpec needs the last good predictor spec")
            restore = _restored(predictor, last_good)
            return {"predictor": restore} if restore else {}
        if isinstance(action, SetCanary | RollBack):
            percent = action.percent if isinstance(action, SetCanary) else 0
            if entry is not None:
                return {"canary": [{**entry, "trafficPercent": percent}]}
            if isinstance(action, RollBack):
                return {}      # no canary: everything already goes to the stable
            # A model change written straight into the predictor (the webhook was down):
            # the predictor goes back to the last promoted spec, the change into a canary.
            if last_good is None:
                raise KServeStandardError(
                    f"{_key(obj)}: the predictor changed without a canary and no promoted "
                    "spec is recorded to put back; it cannot be pulled back to a canary")
            return {"predictor": _restored(predictor, last_good),
                    "canary": [_entry(_model(predictor), _changed(predictor, last_good),
                                      percent)]}
        if entry is None:
            raise KServeStandardError(f"{_key(obj)}: no Rollwise canary entry to promote")
        fields = _without_container_name({k: v for k, v in (entry.get("predictor") or {})
                                          .items() if k not in _NOT_MODEL})
        return {"predictor": {**fields, "name": _entry_name(entry)}, "canary": None}

    def in_effect(self, action: Promote | RollBack, obs: Observation,
                  canary: str | None) -> bool:
        """From the route in force (never while it is unknown): promoted when the canary's
        Deployment is the stable one and serves 100%; rolled back when the canary serves
        nothing and its entry asks for 0% (or is gone)."""
        if not obs.traffic:
            return False
        if isinstance(action, Promote):
            return obs.latest_rolled_out == canary and obs.percent_to(canary) == 100
        return obs.percent_to(canary) == 0 and obs.canary_percent in (0, None)

    def hold(self, obj: Mapping[str, Any], percent: int, *,
             previous: Mapping[str, Any] | None = None) -> list[dict[str, Any]] | None:
        """A new model in the stable predictor goes back out of it and becomes the canary
        entry at ``percent``; a new canary entry is set to ``percent``."""
        if previous is None:
            return None
        new, old = _predictor(obj), _predictor(previous)
        if _model(new) != _model(old):
            if not _keeps_canary(previous):
                return None    # maybe KServe before 0.20: the controller finds out and says so
            restored = {**{k: v for k, v in new.items() if k in _NOT_MODEL},
                        **{k: v for k, v in old.items() if k not in _NOT_MODEL}}
            return [{"op": "replace", "path": "/spec/predictor", "value": restored},
                    {"op": "add", "path": "/spec/canary",
                     "value": [_entry(_model(new), _changed(new, old), percent)]}]
        entry = _ours(obj)
        if entry is None or entry.get("trafficPercent") == percent:
            return None
        index = _entries(obj).index(entry)
        return [{"op": "replace", "path": f"/spec/canary/{index}/trafficPercent",
                 "value": percent}]


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"InferenceService {meta.get('namespace')}/{meta.get('name')}"


STANDARD = KServeStandard()
