"""Plain Deployments and Services behind a Gateway API ``HTTPRoute``.

Pure: a Deployment and the objects around it (dicts, as the API returns them) in, an
``Observation``, the spec part of the one merge patch, and the children it needs out.

What the user owns: a Deployment D annotated ``rollwise.io/policy``, the Service(s) that
select D's pods, and an HTTPRoute whose rule has a ``backendRef`` to D's Service: the
route named by D's annotation ``rollwise.io/route`` (same namespace), else the one route
of the namespace whose rules refer to one of D's Services (none or several: the object is
refused with that reason, an ``Unsupported`` Warning Event).

- D is kept ``spec.paused: true`` while managed (every write of D says so, ``steady``, and
  the admission webhook's ``hold`` pauses D when a template edit arrives), so a new image
  or model URI in D's template rolls nothing: the **stable** revision is what D's current
  ReplicaSet runs (the RS owned by D whose template equals D's when D is rolled out, else
  the one with the most available pods), the **candidate** is D's template.
- Revisions are ``pod-template-hash`` values (the label the deployment controller puts on
  every pod of one template), so the metrics preset ``deployment-pods`` queries per version.
- The canary is the Deployment ``<D>-canary`` (D's template, D's replicas, owner-referenced
  to D) and the Service ``<D>-canary`` (D's Service's ports). Its pods must never be
  selected by D or D's Services, so its labels are D's template labels where every key
  that D's ``spec.selector.matchLabels`` or a Service selecting D's pods uses gets the
  value ``<value>-canary`` (``canary_value``), plus ``rollwise.io/canary: "true"``; its
  selector and its Service's selector are those changed labels. A selector with
  ``matchExpressions`` is refused (a changed value could still match it).
- The weight lives in the committed rollout state; the route rule that names D's Service
  gets a second ``backendRef`` to ``<D>-canary`` with the weight and the stable one 100-w
  (``children``, applied by ``controller.kube.children`` after the read, level-triggered).
  The route carries ``rollwise.io/applied`` (the digest of the rules Rollwise last wrote):
  a route that differs from the desired rules while carrying that digest was edited by
  hand, and is never written back; the observed weight then differs from the state's and
  the rollout pauses (``manual-edit``), during which the route (its digest brought up to
  date) and D are left as the hand left them. D unpaused by hand while its canary is routed
  reads as weight 100 (the candidate rolls out to all of D's pods): it pauses likewise.
- ``canary_percent`` is the canary's share of the route rule as written; without a canary
  ``backendRef``, 0 while D is paused (a new template serves nothing) and None when D is
  not (a template edit then rolls at once: the unguarded deploy, pulled back by pausing D).
- The split in force is the route's weights only when a parent reports ``Accepted: True``
  at ``observedGeneration == metadata.generation``.
- Promote: D unpaused (its template is already the candidate), a real rolling update by
  kube-controller-manager, while the route sends 100% to the canary; in effect once D rolled
  (``observedGeneration`` current, updated == available == replicas, its new RS's template
  the canary's without the canary labels), when the candidate's revision is the rolled-out
  one. Then the route goes back to the stable Service alone, the canary is deleted (once the
  route no longer names it) and D is paused again.
- Rollback: canary weight 0, confirmed from the route in force; then the canary goes.
  ``restorePreviousSpec`` writes the last promoted template back into D (still paused).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.errors import Unsupported
from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary, TrafficAction
from controller.rollout.state import (
    Observation,
    PauseReason,
    Phase,
    RolloutState,
    TrafficTarget,
)
from controller.routers.base import Ref, Related, Resource, Write, spec_hash
from controller.routers.kserve_standard import HTTPROUTES

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
SERVICES = Resource("", "v1", "services", "Service")
ROUTE_ANNOTATION = "rollwise.io/route"        # on D: which HTTPRoute (user)
APPLIED_ANNOTATION = "rollwise.io/applied"    # on the route and the canary: what Rollwise wrote
CANARY_LABEL = "rollwise.io/canary"
CANARY_SUFFIX = "-canary"
HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
_MAX_NAME = 63


class DeploymentGatewayError(ValueError):
    """A traffic action that cannot be written on this Deployment as it is."""


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def _name(obj: Mapping[str, Any] | None) -> str:
    return str(_meta(obj).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("namespace") or "")


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def _items(listed: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list((listed or {}).get("items") or [])


def _template(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return _spec(obj).get("template") or {}


def _labels(template: Mapping[str, Any]) -> dict[str, str]:
    return dict((template.get("metadata") or {}).get("labels") or {})


def canary_name(name: str) -> str:
    """The canary Deployment's and Service's name."""
    return f"{name}{CANARY_SUFFIX}"


def canary_value(value: str) -> str:
    """A selector label's value on canary pods: never equal to ``value`` and a valid label
    value (at most 63 characters, ending alphanumeric)."""
    if not value:
        return CANARY_SUFFIX[1:]
    return f"{value[:_MAX_NAME - len(CANARY_SUFFIX)]}{CANARY_SUFFIX}"


def selector_string(labels: Mapping[str, str]) -> str:
    """A label selector (``k=v,...``, sorted) for ``labels``."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _match_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    return dict((_spec(deployment).get("selector") or {}).get("matchLabels") or {})


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def storage_uri(template: Mapping[str, Any]) -> str:
    """The model a template serves: its first container's env STORAGE_URI, else its image."""
    containers = (template.get("spec") or {}).get("containers") or [{}]
    first = containers[0]
    for env in first.get("env") or ():
        if env.get("name") == "STORAGE_URI" and env.get("value"):
            return str(env["value"])
    return str(first.get("image") or "")


def merge_diff(current: Any, desired: Any) -> Any:
    """The JSON merge patch that turns ``current`` into ``desired`` (keys ``desired`` lacks
    become null; lists and scalars are replaced whole)."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return copy.deepcopy(desired)
    patch: dict[str, Any] = {k: None for k in current if k not in desired}
    for key, value in desired.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif current[key] != value:
            patch[key] = merge_diff(current[key], value)
    return patch


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(template))
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return out


def _revision_number(rs: Mapping[str, Any]) -> int:
    try:
        return int((_meta(rs).get("annotations") or {}).get(REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


def _owned(replica_sets: Iterable[Mapping[str, Any]], owner: Mapping[str, Any] | None
           ) -> list[Mapping[str, Any]]:
    uid = _meta(owner).get("uid")
    if not uid:
        return []
    return [rs for rs in replica_sets
            if any(ref.get("uid") == uid for ref in _meta(rs).get("ownerReferences") or ())]


def _hash(rs: Mapping[str, Any] | None) -> str | None:
    value = (_meta(rs).get("labels") or {}).get(HASH_LABEL)
    return str(value) if value else None


def _rolled_out(deployment: Mapping[str, Any]) -> bool:
    """The deployment controller finished rolling D to its template."""
    status = deployment.get("status") or {}
    replicas = int(_spec(deployment).get("replicas", 1))
    return (status.get("observedGeneration") == _meta(deployment).get("generation")
            and int(status.get("updatedReplicas") or 0) == replicas
            and int(status.get("availableReplicas") or 0) == replicas
            and int(status.get("replicas") or 0) == replicas)


def _available(deployment: Mapping[str, Any] | None) -> bool:
    """Ready at its current generation: every replica updated and available."""
    return deployment is not None and _rolled_out(deployment) and int(
        ((deployment.get("status") or {}).get("availableReplicas")) or 0) > 0


def _stable_rs(deployment: Mapping[str, Any], owned: Sequence[Mapping[str, Any]]
               ) -> Mapping[str, Any] | None:
    """D's current ReplicaSet: the one running D's template once D rolled out to it, else
    the one with the most available pods (the newest on a tie)."""
    if not owned:
        return None
    if not _spec(deployment).get("paused") and _rolled_out(deployment):
        for rs in owned:
            if _without_hash(_template(rs)) == _without_hash(_template(deployment)):
                return rs
    return max(owned, key=lambda rs: (int((rs.get("status") or {}).get("availableReplicas")
                                          or 0), _revision_number(rs)))


def _accepted(route: Mapping[str, Any]) -> bool:
    generation = _meta(route).get("generation")
    return any(c.get("type") == "Accepted" and c.get("status") == "True"
               and c.get("observedGeneration") == generation
               for parent in (route.get("status") or {}).get("parents") or ()
               for c in parent.get("conditions") or ())


def _is_service_ref(ref: Mapping[str, Any], namespace: str, route_namespace: str) -> bool:
    return ((ref.get("kind") or "Service") == "Service" and not ref.get("group")
            and (ref.get("namespace") or route_namespace) == namespace)


@dataclass(frozen=True)
class Layout:
    """What surrounds D: its Services, the route and the stable Service it names, and the
    label keys canary pods must carry changed values of."""

    route: Mapping[str, Any]
    service: Mapping[str, Any]          # the Service of D the route's rule names
    keys: frozenset[str]                # selector keys of D and of every Service of D


def _related_refs(obj: Mapping[str, Any]) -> dict[str, Ref]:
    namespace, name = _namespace(obj), _name(obj)
    route = ((_meta(obj).get("annotations") or {}).get(ROUTE_ANNOTATION))
    labels = _match_labels(obj)
    return {
        "routes": (Ref(HTTPROUTES, namespace, str(route)) if route
                   else Ref(HTTPROUTES, namespace, "", selector="")),
        "services": Ref(SERVICES, namespace, "", selector=""),
        "canary": Ref(DEPLOYMENTS, namespace, canary_name(name)),
        "replicasets": Ref(REPLICASETS, namespace, "", selector=selector_string(labels)),
        "canary-replicasets": Ref(REPLICASETS, namespace, "", selector=selector_string(
            _canary_selector(labels, frozenset(labels)))),
    }


def _canary_selector(labels: Mapping[str, str], keys: frozenset[str]) -> dict[str, str]:
    """Labels as canary pods carry them: the values of ``keys`` changed, the canary label."""
    out = {k: canary_value(v) if k in keys else v for k, v in labels.items()}
    out[CANARY_LABEL] = "true"
    return out


def layout(obj: Mapping[str, Any], related: Related) -> Layout:
    """D's Services and route; ``Unsupported`` naming why when the route is not one."""
    refs = _related_refs(obj)
    namespace, name = _namespace(obj), _name(obj)
    pod_labels = _labels(_template(obj))
    services = [s for s in _items(related.get(refs["services"]))
                if _selects(_spec(s).get("selector") or {}, pod_labels)
                and _name(s) != canary_name(name)]
    names = {_name(s) for s in services}
    found = related.get(refs["routes"])
    if refs["routes"].selector is None:
        if found is None:
            raise Unsupported(f"Deployment {namespace}/{name}: HTTPRoute "
                              f"{refs['routes'].name} ({ROUTE_ANNOTATION}) does not exist")
        routes = [found]
    else:
        routes = _items(found)
    matching = [(route, ref_name) for route in routes for ref_name in sorted(names)
                if ref_name in _route_services(route)]
    if not services:
        raise Unsupported(f"Deployment {namespace}/{name}: no Service selects its pods "
                          "(the route must send traffic to one)")
    if not matching:
        raise Unsupported(f"Deployment {namespace}/{name}: no HTTPRoute in {namespace} has a "
                          f"rule with a backendRef to its Service ({', '.join(sorted(names))})")
    if len({_name(r) for r, _ in matching}) > 1 or len(matching) > 1:
        found_names = ", ".join(sorted({f"{_name(r)} -> {s}" for r, s in matching}))
        raise Unsupported(f"Deployment {namespace}/{name}: several routes or Services serve it "
                          f"({found_names}); name one with the annotation {ROUTE_ANNOTATION}")
    route, service_name = matching[0]
    others = [str(ref.get("name")) for rule in _spec(route).get("rules") or ()
              if service_name in _rule_services(rule, _namespace(route))
              for ref in rule.get("backendRefs") or ()
              if str(ref.get("name")) not in (service_name, canary_name(name))]
    if others:
        raise Unsupported(f"Deployment {namespace}/{name}: the rule of HTTPRoute "
                          f"{_name(route)} that names {service_name} also sends traffic to "
                          f"{', '.join(others)}; Rollwise splits a rule between the stable "
                          "Service and its canary only")
    keys = frozenset(_match_labels(obj)) | {k for s in services
                                             for k in (_spec(s).get("selector") or {})}
    service = next(s for s in services if _name(s) == service_name)
    return Layout(route=route, service=service, keys=keys)


def _rule_services(rule: Mapping[str, Any], route_namespace: str) -> set[str]:
    return {str(ref.get("name")) for ref in rule.get("backendRefs") or ()
            if _is_service_ref(ref, route_namespace, route_namespace)}


def _route_services(route: Mapping[str, Any]) -> set[str]:
    return {n for rule in _spec(route).get("rules") or ()
            for n in _rule_services(rule, _namespace(route))}


def _shares(route: Mapping[str, Any], stable: str, canary: str) -> dict[str, int] | None:
    """Percent of the first rule that names ``stable``, by Service (a missing weight is 1),
    or None when no rule names it."""
    for rule in _spec(route).get("rules") or ():
        refs = [r for r in rule.get("backendRefs") or ()
                if str(r.get("name")) in (stable, canary)]
        if any(str(r.get("name")) == stable for r in refs):
            weights = [(str(r.get("name")), int(r.get("weight", 1))) for r in refs]
            total = sum(w for _, w in weights)
            return {n: round(100 * w / total) if total else 0 for n, w in weights}
    return None


# --- the desired children --------------------------------------------------------------


def _desired_weight(state: RolloutState | None) -> int | None:
    """The canary weight the committed state asks for; None: no canary."""
    if state is None or state.phase.terminal or state.phase == Phase.BLOCKED:
        return None
    if state.phase == Phase.PROMOTING:
        return 100          # D rolls while the canary serves everything
    return state.expected_percent or 0


def _canary_deployment(obj: Mapping[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    meta = _meta(obj)
    name = _name(obj)
    template = _without_hash(_template(obj))
    template.setdefault("metadata", {})["labels"] = _canary_selector(_labels(template), keys)
    return {
        "apiVersion": DEPLOYMENTS.api_version, "kind": DEPLOYMENTS.kind,
        "metadata": {"name": canary_name(name), "namespace": _namespace(obj),
                     "labels": {CANARY_LABEL: "true"},
                     "annotations": {APPLIED_ANNOTATION: _candidate(obj)},
                     "ownerReferences": [{"apiVersion": DEPLOYMENTS.api_version,
                                          "kind": DEPLOYMENTS.kind, "name": name,
                                          "uid": meta.get("uid")}]},
        "spec": {"replicas": int(_spec(obj).get("replicas", 1)),
                 "selector": {"matchLabels": _canary_selector(_match_labels(obj), keys)},
                 "template": template},
    }


def _canary_service(obj: Mapping[str, Any], service: Mapping[str, Any],
                    keys: frozenset[str]) -> dict[str, Any]:
    ports = [{k: v for k, v in port.items() if k in ("name", "port", "targetPort", "protocol",
                                                      "appProtocol")}
             for port in _spec(service).get("ports") or ()]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": canary_name(_name(obj)), "namespace": _namespace(obj),
                     "labels": {CANARY_LABEL: "true"},
                     "ownerReferences": [{"apiVersion": DEPLOYMENTS.api_version,
                                          "kind": DEPLOYMENTS.kind, "name": _name(obj),
                                          "uid": _meta(obj).get("uid")}]},
        "spec": {"selector": _canary_selector(_spec(service).get("selector") or {}, keys),
                 "ports": ports},
    }


def _candidate(obj: Mapping[str, Any]) -> str:
    return spec_hash({"template": _without_hash(_template(obj)),
                      "replicas": int(_spec(obj).get("replicas", 1))})


def desired_rules(route: Mapping[str, Any], stable: str, canary: str,
                  weight: int | None) -> list[dict[str, Any]]:
    """The route's rules with every rule that names ``stable`` split ``100 - weight`` to it
    and ``weight`` to ``canary`` (same port); ``weight`` None: the stable alone at 100."""
    rules = []
    for rule in _spec(route).get("rules") or ():
        rule = copy.deepcopy(dict(rule))
        refs = rule.get("backendRefs") or []
        stable_ref = next((r for r in refs if str(r.get("name")) == stable), None)
        if stable_ref is not None:
            kept = [r for r in refs if str(r.get("name")) not in (stable, canary)]
            split = [{**stable_ref, "weight": 100 - (weight or 0)}]
            if weight is not None:
                ref = {k: v for k, v in stable_ref.items() if k not in ("name", "weight")}
                split.append({**ref, "name": canary, "weight": weight})
            rule["backendRefs"] = [*split, *kept]
        rules.append(rule)
    return rules


def digest(rules: Any) -> str:
    return spec_hash({"rules": rules})[:16]


# --- the router ------------------------------------------------------------------------


class DeploymentGateway:
    """The ``TrafficRouter`` of plain Deployments behind a Gateway API HTTPRoute."""

    name = "deployment-gateway"
    resource = DEPLOYMENTS
    weight_field = "the canary backendRef weight of the HTTPRoute"

    def supports(self, obj: Mapping[str, Any]) -> str | None:
        if obj.get("kind") != DEPLOYMENTS.kind:
            return "it is not a Deployment"
        name = _name(obj)
        if name.endswith(CANARY_SUFFIX) and (_meta(obj).get("labels") or {}).get(
                CANARY_LABEL) == "true":
            return "it is a canary Rollwise made"
        owner = next((ref for ref in _meta(obj).get("ownerReferences") or ()
                      if ref.get("controller")), None)
        if owner is not None:
            return (f"it is managed by {owner.get('kind')} {owner.get('name')} (KServe copies "
                    "an InferenceService's annotations to its Deployments): Rollwise drives "
                    "that object, not the Deployment it made")
        if len(canary_name(name)) > _MAX_NAME:
            return (f"its canary's name {canary_name(name)!r} would be longer than "
                    f"{_MAX_NAME} characters (a Service name)")
        selector = _spec(obj).get("selector") or {}
        if selector.get("matchExpressions"):
            return ("its spec.selector has matchExpressions: Rollwise keeps canary pods out "
                    "of D's selector by changing matchLabels values only")
        if not selector.get("matchLabels"):
            return "its spec.selector has no matchLabels"
        return None

    def spec(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """The pod template: what a model version is (a new image or model URI)."""
        return {"template": _without_hash(_template(obj))}

    def related(self, obj: Mapping[str, Any]) -> tuple[Ref, ...]:
        return tuple(_related_refs(obj).values())

    def observe(self, obj: Mapping[str, Any], related: Related | None = None) -> Observation:
        related = related or {}
        refs = _related_refs(obj)
        found = layout(obj, related)
        name = _name(obj)
        canary = related.get(refs["canary"])
        own = _owned(_items(related.get(refs["replicasets"])), obj)
        stable_rs = _stable_rs(obj, own)
        stable = _hash(stable_rs)
        canary_owned = _owned(_items(related.get(refs["canary-replicasets"])), canary)
        canary_rs = max(canary_owned, key=_revision_number) if canary_owned else None
        current = canary is not None and (
            (_meta(canary).get("annotations") or {}).get(APPLIED_ANNOTATION) == _candidate(obj)
            and (canary.get("status") or {}).get("observedGeneration")
            == _meta(canary).get("generation"))
        canary_hash = _hash(canary_rs) if current else None
        differs = stable_rs is None or (_without_hash(_template(stable_rs))
                                        != _without_hash(_template(obj)))
        # A canary that does not run the candidate yet, or a new template without its
        # canary: no revision of the candidate exists yet.
        latest = canary_hash if canary is not None else (None if differs else stable)
        rolled_out, previous = stable, None
        if (canary_hash is not None and not _spec(obj).get("paused") and _rolled_out(obj)
                and not differs):
            # D rolled out to the candidate: the candidate's revision is the rolled-out one.
            rolled_out, previous = canary_hash, stable
        stable_service, canary_service = _name(found.service), canary_name(name)
        shares = _shares(found.route, stable_service, canary_service) or {}
        if canary_service in shares:
            # D unpaused by hand while its canary is routed: D rolls the candidate out to
            # all its pods, as a weight of 100 would (told apart from a promotion by the
            # state machine, which promotes with Promote, never by a weight).
            percent: int | None = 100 if not _spec(obj).get("paused") else (
                shares[canary_service])
        else:
            percent = 0 if _spec(obj).get("paused") else None
        traffic: tuple[TrafficTarget, ...] = ()
        if _accepted(found.route):
            revisions = {stable_service: stable or stable_service,
                         canary_service: canary_hash or canary_service}
            traffic = tuple(TrafficTarget(revision=revisions[service], percent=share,
                                          latest=service == canary_service)
                            for service, share in shares.items())
        ready = canary_hash if current and _available(canary) else None
        if ready is None and stable is not None and int(
                ((obj.get("status") or {}).get("availableReplicas")) or 0) > 0:
            ready = stable
        hostnames = _spec(found.route).get("hostnames") or ()
        return Observation(
            spec_hash=spec_hash(self.spec(obj)),
            storage_uri=storage_uri(_template(obj)),
            canary_percent=percent,
            latest_created=latest,
            latest_ready=ready,
            latest_rolled_out=rolled_out,
            previous_rolled_out=previous,
            revision_failure=_failure(canary) if current else None,
            traffic=traffic,
            url=f"http://{hostnames[0]}" if hostnames else None,
        )

    def write(self, obj: Mapping[str, Any], action: TrafficAction, *,
              last_good: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """D's part of the one patch: paused, except while promoting (the weight itself is
        the committed state's, which ``children`` applies to the route)."""
        if isinstance(action, Promote):
            return {"paused": False}
        if isinstance(action, RestoreSpec):
            if last_good is None or "template" not in last_good:
                raise DeploymentGatewayError(
                    f"Deployment {_namespace(obj)}/{_name(obj)}: RestoreSpec needs the last "
                    "good template")
            restore = merge_diff(_without_hash(_template(obj)), last_good["template"])
            return {"paused": True, **({"template": restore} if restore else {})}
        assert isinstance(action, SetCanary | RollBack)
        return {"paused": True}

    def steady(self, obj: Mapping[str, Any], state: RolloutState) -> dict[str, Any]:
        """What every write of D carries under ``state``: paused unless promoting; left as
        it is while paused on a hand edit (a hand that unpaused D is never fought)."""
        if _hand_edited(state):
            return {}
        paused = state.phase != Phase.PROMOTING
        return {} if bool(_spec(obj).get("paused")) == paused else {"paused": paused}

    def in_effect(self, action: Promote | RollBack, obs: Observation,
                  canary: str | None) -> bool:
        """Promoted when D rolled out to the candidate; rolled back when the route in force
        sends the canary nothing and asks for 0% (or names no canary)."""
        if isinstance(action, Promote):
            return canary is not None and obs.latest_rolled_out == canary
        return bool(obs.traffic) and obs.percent_to(canary) == 0 and (
            obs.canary_percent in (0, None))

    def hold(self, obj: Mapping[str, Any], percent: int, *,
             previous: Mapping[str, Any] | None = None) -> list[dict[str, Any]] | None:
        """A template edit of an unpaused D: pause it, so nothing rolls (the canary takes
        the new template at the first step)."""
        if _spec(obj).get("paused"):
            return None
        return [{"op": "add", "path": "/spec/paused", "value": True}]

    def children(self, obj: Mapping[str, Any], related: Related,
                 state: RolloutState | None) -> tuple[Write, ...]:
        """The writes that make the canary Deployment and Service and the route match the
        committed ``state``, in order (nothing when they already do). A route that differs
        from the rules Rollwise last wrote on it (its ``rollwise.io/applied``) was edited
        by hand: it is left alone."""
        found = layout(obj, related)
        refs = _related_refs(obj)
        namespace, name = _namespace(obj), _name(obj)
        weight = _desired_weight(state)
        canary = related.get(refs["canary"])
        services = {_name(s): s for s in _items(related.get(refs["services"]))}
        writes: list[Write] = []
        if weight is not None:
            body = _canary_deployment(obj, found.keys)
            if canary is None:
                writes.append(Write("create", DEPLOYMENTS, namespace, canary_name(name), body))
            elif (_meta(canary).get("annotations") or {}).get(APPLIED_ANNOTATION) != \
                    _candidate(obj):
                patch = {"metadata": {"annotations": body["metadata"]["annotations"]},
                         "spec": merge_diff(_spec(canary), body["spec"])}
                writes.append(Write("patch", DEPLOYMENTS, namespace, canary_name(name), patch))
            if canary_name(name) not in services:
                writes.append(Write("create", SERVICES, namespace, canary_name(name),
                                    _canary_service(obj, found.service, found.keys)))
        route = found.route
        current = list(_spec(route).get("rules") or [])
        # Paused on a hand edit: the route as the hand left it is adopted as Rollwise's
        # (its digest), so that a resume writes its weight again.
        rules = current if _hand_edited(state) else desired_rules(
            route, _name(found.service), canary_name(name), weight)
        applied = (_meta(route).get("annotations") or {}).get(APPLIED_ANNOTATION)
        if rules != current and applied == digest(rules):
            pass    # edited by hand since Rollwise wrote these rules: never fought
        elif rules != current or applied != digest(rules):
            body = {"metadata": {"resourceVersion": _meta(route).get("resourceVersion"),
                                 "annotations": {APPLIED_ANNOTATION: digest(rules)}}}
            if rules != current:
                body["spec"] = {"rules": rules}
            writes.append(Write("patch", HTTPROUTES, namespace, _name(route), body))
        if weight is None and canary_name(name) not in _route_services(route):
            if canary is not None:
                writes.append(Write("delete", DEPLOYMENTS, namespace, canary_name(name)))
            if canary_name(name) in services:
                writes.append(Write("delete", SERVICES, namespace, canary_name(name)))
        return tuple(writes)


def _hand_edited(state: RolloutState | None) -> bool:
    return state is not None and state.phase == Phase.PAUSED and state.pause is not None and (
        state.pause.reason == PauseReason.MANUAL_EDIT)


def _failure(canary: Mapping[str, Any] | None) -> str | None:
    """Why the canary Deployment cannot become ready (its progress deadline passed)."""
    for condition in (canary or {}).get("status", {}).get("conditions") or ():
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason") or "not progressing")
    return None


DEPLOYMENT_GATEWAY = DeploymentGateway()
