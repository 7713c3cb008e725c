"""The simulated Gateway API gateway: weights, backend resolution, route status, routing.

The pure rules are checked on hand-written objects; then the gateway on the real API
server, with real Deployments (kube-controller-manager and the node agent), splitting real
requests that are counted where they land: at the pods' own endpoints.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import kubernetes.client
import pytest

from simulations.gateway import (
    CONTROLLER_NAME,
    Backend,
    RouteRule,
    Snapshot,
    choose,
    compute,
)
from simulations.world import GATEWAY_NAME, GATEWAY_NAMESPACE, SERVICE_PORT, World
from tests.simulations.deployments import (
    BROKEN,
    V1,
    V2,
    deploy_ready,
    endpoint_requests,
    fresh_namespace,
    ready_pods,
    wait_for,
)

GROUP = "gateway.networking.k8s.io"
NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
PARENT = {"group": GROUP, "kind": "Gateway", "name": "gw", "namespace": "infra"}


# --------------------------------------------------------------------------- objects


def _meta(namespace: str | None, name: str, generation: int = 1,
          created: str = NOW) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": generation, "creationTimestamp": created}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _class(controller: str = CONTROLLER_NAME) -> dict[str, Any]:
    return {"metadata": _meta(None, "sim"), "spec": {"controllerName": controller}}


def _gateway(listeners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    default = [{"name": "http", "protocol": "HTTP", "port": 80,
                "allowedRoutes": {"namespaces": {"from": "All"}}}]
    return {"metadata": _meta("infra", "gw"),
            "spec": {"gatewayClassName": "sim", "listeners": listeners or default}}


def _route(backends: list[dict[str, Any]], *, name: str = "iris", generation: int = 3,
           parent: dict[str, Any] | None = None, hostnames: list[str] | None = None,
           matches: list[dict[str, Any]] | None = None, created: str = NOW,
           status: dict[str, Any] | None = None, **rule: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"parentRefs": [parent or PARENT], "rules": [
        {"backendRefs": backends, **({"matches": matches} if matches else {}), **rule}]}
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {"metadata": _meta("models", name, generation, created), "spec": spec,
            "status": status or {}}


def _ref(name: str, weight: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": 80, "weight": weight, **extra}


def _service(name: str, namespace: str = "models") -> dict[str, Any]:
    return {"metadata": _meta(namespace, name),
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def _slice(service: str, endpoints: dict[str, bool | None],
           namespace: str = "models") -> dict[str, Any]:
    return {"metadata": {**_meta(namespace, f"{service}-abcde"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], **({} if ready is None else {
                "conditions": {"ready": ready}})} for ip, ready in endpoints.items()]}


def _world(*routes: dict[str, Any], **more: Any) -> Snapshot:
    services = [_service("iris"), _service("iris-canary")]
    slices = [_slice("iris", {"10.1.1.1": True, "10.1.1.2": True}),
              _slice("iris-canary", {"10.1.1.3": True})]
    return Snapshot(gateway_classes=more.pop("classes", [_class()]),
                    gateways=more.pop("gateways", [_gateway()]), routes=list(routes),
                    services=more.pop("services", services),
                    endpoint_slices=more.pop("slices", slices),
                    reference_grants=more.pop("grants", []))


def _parent_conditions(snapshot: Snapshot, route: str = "iris") -> dict[str, dict[str, Any]]:
    status = compute(snapshot, now=NOW).statuses[("httproutes", ("models", route))]
    (ours,) = [p for p in status["parents"] if p["controllerName"] == CONTROLLER_NAME]
    return {c["type"]: c for c in ours["conditions"]}


def _rule(snapshot: Snapshot, host: str = "any.example.com", path: str = "/v1/models/x",
          ) -> RouteRule | None:
    return compute(snapshot, now=NOW).tables[("infra", "gw")].match(host, path)


def _shares(rule: RouteRule, draws: int = 20_000) -> Counter[str]:
    rng = random.Random(7)
    return Counter(str(choose(rule, rng).backend) for _ in range(draws))


# --------------------------------------------------------------------------- weights


def test_a_backend_gets_its_weight_over_the_sum_of_the_rule() -> None:
    rule = _rule(_world(_route([_ref("iris", 90), _ref("iris-canary", 10)])))
    assert rule is not None
    shares = _shares(rule)
    # 20 000 draws: sd of the canary share 0.2%; a 50/50 or 100/0 split is far outside.
    assert abs(shares["models/iris-canary"] / 20_000 - 0.10) < 0.01
    # Weights need not sum to 100.
    rule = _rule(_world(_route([_ref("iris", 3), _ref("iris-canary", 1)])))
    assert rule is not None
    assert abs(_shares(rule)["models/iris-canary"] / 20_000 - 0.25) < 0.015


def test_weight_zero_gets_nothing_and_all_zero_is_a_500() -> None:
    rule = _rule(_world(_route([_ref("iris", 0), _ref("iris-canary", 5)])))
    assert rule is not None
    assert set(_shares(rule, 2000)) == {"models/iris-canary"}
    rule = _rule(_world(_route([_ref("iris", 0)])))
    assert rule is not None
    assert choose(rule, random.Random(1)).status == 500


def test_endpoints_are_the_ready_ones_and_a_service_without_any_answers_503() -> None:
    slices = [_slice("iris", {"10.1.1.1": True, "10.1.1.2": False, "10.1.1.4": None}),
              _slice("iris-canary", {"10.1.1.3": False})]
    rule = _rule(_world(_route([_ref("iris", 1), _ref("iris-canary", 1)]), slices=slices))
    assert rule is not None
    by_name = {backend.service: backend for backend in rule.backends}
    assert by_name["models/iris"].endpoints == (("10.1.1.1", 8080), ("10.1.1.4", 8080))
    assert by_name["models/iris-canary"].endpoints == ()
    assert choose(RouteRule(rule.route, 0, (), "PathPrefix", "/",
                            (by_name["models/iris-canary"],), NOW),
                  random.Random(1)).status == 503


# --------------------------------------------------------------------------- backend refs


@pytest.mark.parametrize(("ref", "reason"), [
    (_ref("missing"), "BackendNotFound"),
    ({"name": "iris", "port": 81}, "BackendNotFound"),
    (_ref("iris", group="example.com", kind="Pool"), "InvalidKind"),
    (_ref("iris", namespace="other"), "RefNotPermitted"),
])
def test_an_invalid_backend_ref_is_reported_and_its_share_answered_500(
        ref: dict[str, Any], reason: str) -> None:
    snapshot = _world(_route([_ref("iris-canary", 1), ref]),
                      services=[_service("iris"), _service("iris-canary"),
                                _service("iris", "other")])
    conditions = _parent_conditions(snapshot)
    assert conditions["ResolvedRefs"]["status"] == "False"
    assert conditions["ResolvedRefs"]["reason"] == reason
    assert conditions["Accepted"]["status"] == "True"   # the route itself is fine
    rule = _rule(snapshot)
    assert rule is not None
    rng = random.Random(3)
    statuses = Counter(choose(rule, rng).status for _ in range(4000))
    assert 1800 < statuses[500] < 2200 and statuses[None] == 4000 - statuses[500]


def test_a_reference_grant_opens_another_namespace_to_routes_of_this_one() -> None:
    grant = {"metadata": _meta("other", "allow-models"), "spec": {
        "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "models"}],
        "to": [{"group": "", "kind": "Service", "name": "iris"}]}}
    snapshot = _world(_route([_ref("iris", namespace="other")]),
                      services=[_service("iris", "other")], grants=[grant],
                      slices=[_slice("iris", {"10.2.2.2": True}, "other")])
    assert _parent_conditions(snapshot)["ResolvedRefs"]["status"] == "True"
    rule = _rule(snapshot)
    assert rule is not None
    assert choose(rule, random.Random(1)).endpoint == ("10.2.2.2", 8080)
    wrong_source = {**grant, "spec": {**grant["spec"], "from": [
        {"group": GROUP, "kind": "HTTPRoute", "namespace": "elsewhere"}]}}
    snapshot = _world(_route([_ref("iris", namespace="other")]),
                      services=[_service("iris", "other")], grants=[wrong_source])
    assert _parent_conditions(snapshot)["ResolvedRefs"]["reason"] == "RefNotPermitted"


# --------------------------------------------------------------------------- status


def test_route_status_is_written_at_the_current_generation_and_keeps_transition_times() -> None:
    other = {"parentRef": {"name": "mesh"}, "controllerName": "example.com/mesh",
             "conditions": [{"type": "Accepted", "status": "True"}]}
    route = _route([_ref("iris")], generation=7, status={"parents": [other]})
    first = compute(_world(route), now=NOW).statuses[("httproutes", ("models", "iris"))]
    assert first["parents"][0] == other   # another implementation's entry is kept
    ours = first["parents"][1]
    assert ours["parentRef"] == PARENT and ours["controllerName"] == CONTROLLER_NAME
    assert {(c["type"], c["status"], c["reason"], c["observedGeneration"])
            for c in ours["conditions"]} == {("Accepted", "True", "Accepted", 7),
                                             ("ResolvedRefs", "True", "ResolvedRefs", 7)}
    # Recomputed later with nothing changed: the very same status (no write).
    again = {**route, "status": first}
    assert compute(_world(again), now=LATER).statuses[("httproutes", ("models", "iris"))] == first
    # A new generation moves observedGeneration, not the transition time.
    edited = {**again, "metadata": {**again["metadata"], "generation": 8}}
    newer = compute(_world(edited), now=LATER).statuses[("httproutes", ("models", "iris"))]
    accepted = newer["parents"][1]["conditions"][0]
    assert accepted["observedGeneration"] == 8 and accepted["lastTransitionTime"] == NOW


def test_routes_of_other_implementations_get_no_status_and_no_traffic() -> None:
    desired = compute(_world(_route([_ref("iris")]), classes=[_class("example.com/other")]),
                      now=NOW)
    assert desired.tables == {} and desired.statuses == {}
    elsewhere = _route([_ref("iris")], parent={"group": GROUP, "kind": "Gateway",
                                               "name": "other-gw"})
    desired = compute(_world(elsewhere), now=NOW)
    assert ("httproutes", ("models", "iris")) not in desired.statuses
    assert desired.tables[("infra", "gw")].rules == ()


@pytest.mark.parametrize(("route", "gateways", "reason"), [
    (_route([_ref("iris")], parent={**PARENT, "sectionName": "https"}), None,
     "NoMatchingParent"),
    (_route([_ref("iris")]), [_gateway([{"name": "http", "protocol": "HTTP", "port": 80}])],
     "NotAllowedByListeners"),
    (_route([_ref("iris")], hostnames=["iris.example.com"]),
     [_gateway([{"name": "http", "protocol": "HTTP", "port": 80, "hostname": "*.other.org",
                 "allowedRoutes": {"namespaces": {"from": "All"}}}])],
     "NoMatchingListenerHostname"),
    (_route([_ref("iris")], filters=[{"type": "RequestHeaderModifier"}]), None,
     "UnsupportedValue"),
    (_route([_ref("iris")], matches=[{"path": {"type": "RegularExpression", "value": "/v.*"}}]),
     None, "UnsupportedValue"),
], ids=["no-such-listener", "same-namespace-only", "hostnames-disjoint", "filters",
        "regex-path"])
def test_a_route_that_cannot_attach_says_why_and_gets_no_traffic(
        route: dict[str, Any], gateways: list[dict[str, Any]] | None, reason: str) -> None:
    snapshot = _world(route, **({"gateways": gateways} if gateways else {}))
    accepted = _parent_conditions(snapshot)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", reason)
    assert compute(snapshot, now=NOW).tables[("infra", "gw")].rules == ()


def test_gateway_and_class_status_count_attached_routes_and_refuse_other_protocols() -> None:
    listeners = [{"name": "http", "protocol": "HTTP", "port": 80,
                  "allowedRoutes": {"namespaces": {"from": "All"}}},
                 {"name": "tls", "protocol": "HTTPS", "port": 443}]
    desired = compute(_world(_route([_ref("iris")]), _route([_ref("iris")], name="two"),
                             gateways=[_gateway(listeners)]), now=NOW)
    status = desired.statuses[("gateways", ("infra", "gw"))]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Accepted": "True", "Programmed": "True"}
    by_name = {item["name"]: item for item in status["listeners"]}
    assert by_name["http"]["attachedRoutes"] == 2
    assert by_name["tls"]["conditions"][0]["reason"] == "UnsupportedProtocol"
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    (accepted,) = desired.statuses[("gatewayclasses", ("", "sim"))]["conditions"]
    assert (accepted["type"], accepted["status"]) == ("Accepted", "True")


# --------------------------------------------------------------------------- matching


def test_requests_match_by_host_then_path_with_the_specs_precedence() -> None:
    snapshot = _world(
        _route([_ref("iris")], name="catch-all"),
        _route([_ref("iris-canary")], name="exact", hostnames=["iris.example.com"],
               matches=[{"path": {"type": "Exact", "value": "/v1/models/iris:predict"}}]),
        _route([_ref("iris")], name="wild", hostnames=["*.example.com"],
               matches=[{"path": {"type": "PathPrefix", "value": "/v1/models"}}]),
        _route([_ref("iris")], name="older", hostnames=["iris.example.com"],
               created="2025-01-01T00:00:00Z"),
        _route([_ref("iris")], name="newer", hostnames=["iris.example.com"]),
    )
    table = compute(snapshot, now=NOW).tables[("infra", "gw")]

    def matched(host: str, path: str) -> str | None:
        rule = table.match(host, path)
        return rule.route[1] if rule else None

    assert matched("iris.example.com:8080", "/v1/models/iris:predict") == "exact"
    assert matched("iris.example.com", "/v1/models/iris:explain") == "older"
    assert matched("x.example.com", "/v1/models/iris:predict") == "wild"
    assert matched("x.example.com", "/v1/modelsfoo") == "catch-all"   # prefixes are elements
    assert matched("elsewhere.org", "/") == "catch-all"


def test_backend_draws_are_reproducible_for_a_seed() -> None:
    backends = (Backend("a", 1, (("10.0.1.1", 1),)), Backend("b", 1, (("10.0.1.2", 1),)))
    rule = RouteRule(("ns", "r"), 0, (), "PathPrefix", "/", backends, NOW)
    draws = [[choose(rule, rng).backend for _ in range(50)]
             for rng in (random.Random(5), random.Random(5))]
    assert draws[0] == draws[1] and set(draws[0]) == {"a", "b"}


# --------------------------------------------------------------------------- end to end


def _set_weights(world: World, namespace: str, weights: dict[str, int]) -> int:
    """Replace the route's backends; returns the route's new generation."""
    backends = [{"name": name, "port": SERVICE_PORT, "weight": weight}
                for name, weight in weights.items()]
    route = kubernetes.client.CustomObjectsApi(world.admin).patch_namespaced_custom_object(
        GROUP, "v1", namespace, "httproutes", "iris",
        {"spec": {"rules": [{"backendRefs": backends}]}})
    return int(route["metadata"]["generation"])


def _in_force(world: World, namespace: str, generation: int) -> bool:
    """The gateway accepted the route and resolved its refs at this generation."""
    route = kubernetes.client.CustomObjectsApi(world.admin).get_namespaced_custom_object(
        GROUP, "v1", namespace, "httproutes", "iris")
    parents = [p for p in (route.get("status") or {}).get("parents") or ()
               if p["controllerName"] == CONTROLLER_NAME]
    return len(parents) == 1 and parents[0]["parentRef"]["name"] == GATEWAY_NAME and all(
        c["status"] == "True" and c["observedGeneration"] == generation
        for c in parents[0]["conditions"])


def _served(world: World, namespace: str, app: str) -> int:
    return sum(endpoint_requests(world, namespace, pod.metadata.name)
               for pod in ready_pods(world, namespace, app))


def _send(world: World, namespace: str, requests: int) -> Counter[str]:
    generator = world.start_route_traffic(namespace, "iris", 400.0, max_seconds=30.0,
                                          max_requests=requests)
    assert generator.wait(40.0)
    assert generator.dropped == 0 and sum(generator.sent.values()) == requests
    return generator.errors


def _split(world: World, canary: str, weights: dict[str, int]) -> tuple[str, int]:
    """A fresh namespace with a stable (2 pods of V1) and a canary Deployment (1 pod of
    ``canary``), the route "iris" weighted as given and in force: (namespace, generation)."""
    namespace = fresh_namespace(world)
    deploy_ready(world, namespace, "iris", V1, replicas=2)
    if canary == BROKEN:
        world.create_model_deployment(namespace, "iris-canary", BROKEN, replicas=1)
    else:
        deploy_ready(world, namespace, "iris-canary", canary, replicas=1)
    generation = _set_weights(world, namespace, weights)
    assert wait_for(lambda: _in_force(world, namespace, generation), 20,
                    f"the route weighted {weights} accepted at generation {generation}")
    return namespace, generation


@pytest.mark.e2e
def test_a_90_10_route_splits_real_requests_90_10_at_the_pods(deployment_world: World) -> None:
    world = deployment_world
    namespace, _ = _split(world, V2, {"iris": 90, "iris-canary": 10})
    assert _send(world, namespace, 2000) == Counter()
    stable, canary = _served(world, namespace, "iris"), _served(world, namespace, "iris-canary")
    assert stable + canary == 2000
    # sd of the canary's count is 13.4: 200 +- 50 fails a 80/20 or 95/5 split.
    assert 150 <= canary <= 250, (stable, canary)
    per_stable_pod = [endpoint_requests(world, namespace, pod.metadata.name)
                      for pod in ready_pods(world, namespace, "iris")]
    assert min(per_stable_pod) > 600   # both stable pods share the stable weight


@pytest.mark.e2e
def test_route_status_names_the_generation_whose_split_is_in_force(
        deployment_world: World) -> None:
    world = deployment_world
    namespace, first = _split(world, V2, {"iris": 100, "iris-canary": 0})
    _send(world, namespace, 200)
    assert _served(world, namespace, "iris-canary") == 0
    second = _set_weights(world, namespace, {"iris": 0, "iris-canary": 100})
    assert second == first + 1
    assert wait_for(lambda: _in_force(world, namespace, second), 20, "generation of 0/100")
    before = _served(world, namespace, "iris")
    _send(world, namespace, 200)
    assert _served(world, namespace, "iris") == before
    assert _served(world, namespace, "iris-canary") == 200
    gateway = kubernetes.client.CustomObjectsApi(world.admin).get_namespaced_custom_object(
        GROUP, "v1", GATEWAY_NAMESPACE, "gateways", GATEWAY_NAME)
    assert {c["type"]: c["status"] for c in gateway["status"]["conditions"]} == {
        "Accepted": "True", "Programmed": "True"}


@pytest.mark.e2e
def test_a_never_ready_backend_gets_no_traffic_and_its_share_is_503(
        deployment_world: World) -> None:
    world = deployment_world
    namespace, _ = _split(world, BROKEN, {"iris": 50, "iris-canary": 50})
    errors = _send(world, namespace, 600)
    broken_pods = kubernetes.client.CoreV1Api(world.admin).list_namespaced_pod(
        namespace, label_selector="app=iris-canary").items
    assert len(broken_pods) == 1 and broken_pods[0].status.pod_ip   # running, never ready
    assert endpoint_requests(world, namespace, broken_pods[0].metadata.name) == 0
    failed = sum(errors.values())
    assert 240 <= failed <= 360, failed   # half of 600, sd 12
    assert _served(world, namespace, "iris") == 600 - failed
    assert world.gateway.requests[(f"{namespace}/iris", f"{namespace}/iris-canary", 503)] == (
        failed)
