"""The HTTPRoutes of KServe's Standard mode, and the gateway's side of them, as pure functions.

Pure: no I/O, no clock (``now`` comes in). Callers: :mod:`simulations.kserve.standard`
(what KServe writes and how it judges a route ready), :mod:`simulations.kserve.controller`
(the gateway status it writes for KServe's routes) and :mod:`simulations.traffic` (the split
a route puts in force).

KServe's side follows kserve/kserve aaac4e294dae2c7b1aa1886447793f3aa1c30912
``pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go``
(``createRawPredictorHTTPRoute``, ``createRawTopLevelHTTPRoute``, ``createHTTPRouteRule``,
``addIsvcHeaders``, ``resolveTimeout``, ``applyCanaryWeights`` with its readiness gating
from PR #5984, ``semanticHttpRouteEquals``, ``isHTTPRouteReady``), ``domain.go``
``GenerateDomainName`` with the default ``domainTemplate``, and apimachinery's
``equality.Semantic.DeepDerivative``. The gateway's side follows the Gateway API v1.6.1
specification of ``HTTPRoute`` (``backendRefs[].weight``, default 1; ``status.parents[]``
with ``Accepted`` and ``ResolvedRefs`` at ``observedGeneration``) as a conformant
implementation writes it; which gateway writes it is the world's choice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from simulations.kserve.rules import (
    InferenceService,
    JsonObject,
    Settings,
    _timestamp,
    predictor_service_name,
    propagated_annotations,
)

__all__ = [
    "GATEWAY_GROUP",
    "GATEWAY_VERSION",
    "HTTPROUTES",
    "accepted_at_generation",
    "apply_canary_weights",
    "deep_derivative",
    "desired_routes",
    "gateway_status",
    "route_needs_update",
    "route_ready",
    "split_from_route",
]

GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
GATEWAY_VERSION: Final = "v1"
HTTPROUTES: Final = "httproutes"
ISVC_NAME_HEADER: Final = "KServe-Isvc-Name"
ISVC_NAMESPACE_HEADER: Final = "KServe-Isvc-Namespace"
FALLBACK_PREFIX: Final = "^/.*$"
HTTP_PORT: Final = 80
DEFAULT_ROUTE_TIMEOUT: Final = "60s"
HTTPROUTE_NOT_READY: Final = "HttpRouteNotReady"
PARENT_STATUS_NOT_AVAILABLE: Final = "ParentStatusNotAvailable"


def is_go_zero(value: Any) -> bool:
    """A JSON value that decodes to Go's zero value of a pointer, string, slice or map."""
    return value is None or value == "" or value == [] or value == {}


# --- what KServe writes -------------------------------------------------------------------------


def host(name: str, namespace: str, settings: Settings) -> str:
    """``GenerateDomainName`` with KServe's default ``domainTemplate``
    ``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``."""
    return f"{name}-{namespace}.{settings.domain}"


def _backend(service: str, namespace: str) -> JsonObject:
    """``createHTTPRouteRule``'s one backendRef: the Service on port 80, no weight."""
    return {"kind": "Service", "name": service, "namespace": namespace, "port": HTTP_PORT}


def apply_canary_weights(
    backend_refs: Sequence[Mapping[str, Any]],
    isvc: InferenceService,
    canary_statuses: Sequence[Mapping[str, Any]],
) -> list[JsonObject]:
    """``applyCanaryWeights`` on one rule's ``backendRefs`` (a rule without any is left)."""
    if not backend_refs:
        return [dict(ref) for ref in backend_refs]
    ready = {str(s.get("name")): bool(s.get("ready")) for s in canary_statuses}
    ready_canaries = [
        c for c in isvc.canary if ready.get(str((c.get("predictor") or {}).get("name")), False)
    ]
    template = backend_refs[0]
    stable_weight = 100 - sum(int(c.get("trafficPercent") or 0) for c in ready_canaries)
    out = [{**{k: v for k, v in template.items() if k != "weight"}, "weight": stable_weight}]
    for canary in ready_canaries:
        service = predictor_service_name(isvc.name, str(canary["predictor"]["name"]))
        ref = {k: v for k, v in template.items() if k in ("kind", "namespace", "port")}
        out.append({**ref, "name": service, "weight": int(canary.get("trafficPercent") or 0)})
    return out


def desired_routes(
    isvc: InferenceService,
    canary_statuses: Sequence[Mapping[str, Any]],
    settings: Settings,
) -> tuple[JsonObject, JsonObject]:
    """``createRawPredictorHTTPRoute`` and ``createRawTopLevelHTTPRoute`` for a predictor-only
    InferenceService whose Service serves HTTP only (one rule, port 80).

    The predictor route keeps the name ``{isvc}-predictor`` whatever ``predictor.name`` is,
    so it survives a promotion; its backend is the current stable Service.
    """
    stable_service = predictor_service_name(isvc.name, str(isvc.predictor.get("name") or ""))
    gateway_namespace, gateway_name = settings.ingress_gateway.split("/")
    labels = {k: v for k, v in isvc.labels.items() if k not in settings.label_disallowed}
    annotations = propagated_annotations(isvc, settings)
    filters = [
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {
                "set": [
                    {"name": ISVC_NAME_HEADER, "value": isvc.name},
                    {"name": ISVC_NAMESPACE_HEADER, "value": isvc.namespace},
                ]
            },
        }
    ]
    timeout = isvc.predictor.get("timeout")
    backends = [_backend(stable_service, isvc.namespace)]
    if isvc.canary and settings.canary_code != "v0.20.0":
        backends = apply_canary_weights(backends, isvc, canary_statuses)
    rule: JsonObject = {
        "matches": [{"path": {"type": "RegularExpression", "value": FALLBACK_PREFIX}}],
        "filters": filters,
        "backendRefs": backends,
        "timeouts": {"request": f"{int(timeout)}s" if timeout is not None
                     else DEFAULT_ROUTE_TIMEOUT},
    }
    owner = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "name": isvc.name,
        "uid": isvc.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }

    def route(name: str, host: str) -> JsonObject:
        metadata: JsonObject = {"name": name, "namespace": isvc.namespace,
                                "ownerReferences": [owner]}
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        return {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
            "kind": "HTTPRoute",
            "metadata": metadata,
            "spec": {
                "hostnames": [host],
                "rules": [copy.deepcopy(rule)],
                "parentRefs": [
                    {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": gateway_namespace,
                     "name": gateway_name}
                ],
            },
        }

    predictor_route_name = predictor_service_name(isvc.name)
    return (
        route(predictor_route_name, host(predictor_route_name, isvc.namespace, settings)),
        route(isvc.name, host(isvc.name, isvc.namespace, settings)),
    )


def deep_derivative(desired: Any, existing: Any) -> bool:
    """apimachinery's ``equality.Semantic.DeepDerivative`` on JSON: what ``desired`` leaves
    unset (absent keys, empty strings, lists and objects) is ignored; a longer list in
    ``existing`` matches on its prefix (hence KServe's explicit backendRef count check)."""
    if isinstance(desired, Mapping):
        if not desired:
            return True
        if not isinstance(existing, Mapping):
            return False
        return all(
            deep_derivative(value, existing.get(key)) for key, value in desired.items()
            if not is_go_zero(value)
        ) and all(key in existing for key, value in desired.items() if not is_go_zero(value))
    if isinstance(desired, list):
        if not desired:
            return True
        if not isinstance(existing, list) or len(desired) > len(existing):
            return False
        return all(deep_derivative(d, e) for d, e in zip(desired, existing, strict=False))
    if desired == "":
        return True
    return bool(desired == existing)


def route_needs_update(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """``not semanticHttpRouteEquals(desired, existing)``."""
    d_meta, e_meta = desired.get("metadata") or {}, existing.get("metadata") or {}
    for key in ("labels", "annotations"):
        if not deep_derivative(d_meta.get(key) or {}, e_meta.get(key) or {}):
            return True
    d_rules = (desired.get("spec") or {}).get("rules") or []
    e_rules = (existing.get("spec") or {}).get("rules") or []
    if len(d_rules) != len(e_rules):
        return True
    for d_rule, e_rule in zip(d_rules, e_rules, strict=True):
        if len(d_rule.get("backendRefs") or []) != len(e_rule.get("backendRefs") or []):
            return True
    return not deep_derivative(desired.get("spec") or {}, existing.get("spec") or {})


def route_ready(route: Mapping[str, Any]) -> tuple[bool, str, str]:
    """``isHTTPRouteReady``: (ready, reason, message). Any False parent condition makes a
    route not ready; note that ``observedGeneration`` is not looked at."""
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return False, PARENT_STATUS_NOT_AVAILABLE, HTTPROUTE_NOT_READY
    for parent in parents:
        for cond in parent.get("conditions") or []:
            if cond.get("status") == "False":
                return False, str(cond.get("reason") or ""), str(cond.get("message") or "")
    return True, "", ""


# --- the gateway's side: route status, and the split it puts in force ------------------------


def gateway_status(
    route: Mapping[str, Any],
    services: Collection[str],
    controller_name: str,
    now: datetime,
) -> JsonObject:
    """The ``status.parents`` a conformant gateway writes for a route it accepts: per parent
    ``Accepted`` and ``ResolvedRefs`` (False, ``BackendNotFound``, when a backend Service in
    the route's namespace does not exist) at the route's ``metadata.generation``. A
    condition that did not change keeps its ``lastTransitionTime``."""
    stamp = _timestamp(now)
    metadata = route.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    namespace = str(metadata.get("namespace") or "")
    spec = route.get("spec") or {}
    missing = sorted(
        str(ref.get("name"))
        for rule in spec.get("rules") or []
        for ref in rule.get("backendRefs") or []
        if (ref.get("kind") or "Service") == "Service"
        and (ref.get("namespace") or namespace) == namespace
        and ref.get("name") not in services
    )
    previous = {
        json.dumps(p.get("parentRef"), sort_keys=True): p
        for p in (route.get("status") or {}).get("parents") or []
    }
    parents = []
    for ref in spec.get("parentRefs") or []:
        parent_ref = {"group": GATEWAY_GROUP, "kind": "Gateway", **ref}
        if "namespace" not in parent_ref:
            parent_ref["namespace"] = namespace
        old = {
            c.get("type"): c
            for c in previous.get(json.dumps(parent_ref, sort_keys=True), {}).get("conditions")
            or []
        }
        resolved = (
            ("True", "ResolvedRefs", "Resolved all the Object references for the Route")
            if not missing
            else ("False", "BackendNotFound", f"Services not found: {', '.join(missing)}")
        )
        conditions = []
        for type_, (cond_status, reason, message) in (
            ("Accepted", ("True", "Accepted", "Route is accepted")),
            ("ResolvedRefs", resolved),
        ):
            cond = {"type": type_, "status": cond_status, "reason": reason, "message": message,
                    "observedGeneration": generation, "lastTransitionTime": stamp}
            before = old.get(type_)
            if before is not None and before.get("status") == cond_status:
                cond["lastTransitionTime"] = before.get("lastTransitionTime", stamp)
            conditions.append(cond)
        parents.append({"parentRef": parent_ref, "controllerName": controller_name,
                        "conditions": conditions})
    return {"parents": parents}


def accepted_at_generation(route: Mapping[str, Any]) -> bool:
    """Whether some parent reports ``Accepted`` True for the route's current generation:
    only then are its weights the split in force."""
    generation = int((route.get("metadata") or {}).get("generation") or 0)
    for parent in (route.get("status") or {}).get("parents") or []:
        for cond in parent.get("conditions") or []:
            if (
                cond.get("type") == "Accepted"
                and cond.get("status") == "True"
                and int(cond.get("observedGeneration") or 0) == generation
            ):
                return True
    return False


def split_from_route(route: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """The split a route puts in force, as ``(namespace, service, weight)``: the first rule
    with backends (the catch-all rule KServe writes), a missing weight being 1 (the CRD's
    default). The caller checks :func:`accepted_at_generation` first."""
    metadata = route.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if refs:
            return [
                (str(ref.get("namespace") or namespace), str(ref["name"]),
                 int(ref.get("weight", 1)))
                for ref in refs
                if (ref.get("kind") or "Service") == "Service"
            ]
    return []
