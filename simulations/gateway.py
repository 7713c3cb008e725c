"""A simulated Gateway API implementation: reads HTTPRoutes, proxies requests by their
weights to the ready endpoints of Services, and writes route status as a real one does.

Control plane. :class:`SimulatedGateway` owns the GatewayClasses whose
``spec.controllerName`` is its own (``CONTROLLER_NAME``), the Gateways of those classes,
and the HTTPRoutes whose ``parentRefs`` name such a Gateway. On every change of any of
them, of a Service, EndpointSlice or ReferenceGrant, it recomputes everything
(:func:`compute`, pure), installs the new routing tables, and only then writes the
statuses that changed, so a route whose status says ``observedGeneration: N`` is served
with generation N's weights (what a controller of canary weights must wait for):

* GatewayClass: ``Accepted``.
* Gateway: ``Accepted``, ``Programmed``, ``addresses`` (127.0.0.1), per listener
  ``attachedRoutes``, ``supportedKinds`` and ``Accepted``/``Programmed``/``ResolvedRefs``.
* HTTPRoute: one ``status.parents[]`` entry per parentRef on one of its Gateways
  (``controllerName`` this implementation; other implementations' entries are kept), with
  ``Accepted`` (reasons ``Accepted``, ``NoMatchingParent``, ``NotAllowedByListeners``,
  ``NoMatchingListenerHostname``, ``UnsupportedValue``) and ``ResolvedRefs`` (``ResolvedRefs``,
  ``InvalidKind``, ``RefNotPermitted``, ``BackendNotFound``), each condition with the
  route's ``observedGeneration``; a condition keeps its ``lastTransitionTime`` while its
  status stays.

Data plane. Each programmed Gateway gets one HTTP/1.1 server on ``127.0.0.1:<free port>``
(:meth:`SimulatedGateway.url`) serving all its HTTP listeners; the listeners' own port
numbers are not bound. A request is matched by Host (the route's hostnames intersected
with the listener's; exact beats wildcard) and path (``Exact`` and ``PathPrefix``), with
the spec's precedence (exact path, longest prefix, oldest route, namespace/name, rule
order); no match is a 404. A rule's backend is drawn with probability weight / (sum of
the rule's weights) -- weight 0 never, all weights 0 is a 500 -- then one of the Service's
ready endpoints at random. As the spec says, an invalid backendRef's share is answered 500
and a Service without ready endpoints' share 503; an endpoint that does not answer is a
502. Pod IPs are reached through ``resolve`` (simulations.nodes.PodNetwork.local_address).

Backends: core Services only, by port (``backendRefs[].port``, mapped to the EndpointSlice
port of the same name), in the route's namespace or in another one that a ReferenceGrant
opens to HTTPRoutes of the route's namespace. EndpointSlice endpoints are ready unless
``conditions.ready`` is false (the API's "nil means ready"), so terminating pods get none.

Not implemented, and reported as ``Accepted: False, UnsupportedValue`` rather than ignored:
filters, header/query/method matches, ``RegularExpression`` paths; listener protocols
other than HTTP (the listener is not accepted); ``allowedRoutes`` namespace selectors (the
route is ``NotAllowedByListeners``). Timeouts, retries and session persistence are ignored.

Pure: everything above :class:`SimulatedGateway`. I/O: :class:`SimulatedGateway` (API
server, loopback listeners, upstream connections). Callers: simulations.world, tests.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import logging
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from simulations.kube.crds import GATEWAY_API_CRDS  # installed by every control plane
from simulations.kube.informer import Informer, JsonObject, LevelLoop, ObjectKey, object_key

__all__ = [
    "CONTROLLER_NAME",
    "GATEWAY_API_CRDS",
    "Backend",
    "Decision",
    "Desired",
    "GatewayTable",
    "RouteRule",
    "SimulatedGateway",
    "Snapshot",
    "choose",
    "compute",
]

LOG = logging.getLogger(__name__)

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
CONTROLLER_NAME = "rollwise.io/simulated-gateway"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
GATEWAY_ADDRESS = "127.0.0.1"
_API_TIMEOUT = (5.0, 15.0)
_UPSTREAM_TIMEOUT_S = 10.0
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailer", "transfer-encoding", "upgrade", "content-length",
                         "host"})

Plural = str   # "gatewayclasses", "gateways" or "httproutes"
StatusKey = tuple[Plural, ObjectKey]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Snapshot:
    """The objects the gateway reads, as the API server returns them (JSON)."""

    gateway_classes: Sequence[JsonObject] = ()
    gateways: Sequence[JsonObject] = ()
    routes: Sequence[JsonObject] = ()
    services: Sequence[JsonObject] = ()
    endpoint_slices: Sequence[JsonObject] = ()
    reference_grants: Sequence[JsonObject] = ()


@dataclass(frozen=True)
class Backend:
    """One backendRef of a rule, resolved: its ready endpoints, or why it is invalid."""

    service: str                      # "namespace/name"
    weight: int
    endpoints: tuple[tuple[str, int], ...] = ()   # (pod IP, port), ready ones
    invalid: str | None = None        # the ResolvedRefs reason: its share gets a 500


@dataclass(frozen=True)
class RouteRule:
    """One rule of one accepted route, as the data plane matches it."""

    route: ObjectKey
    index: int                        # the rule's position in the route
    hostnames: tuple[str, ...]        # effective hostnames; () matches any host
    path_type: str                    # "Exact" or "PathPrefix"
    path: str
    backends: tuple[Backend, ...]
    created: str                      # the route's creationTimestamp (precedence)


@dataclass(frozen=True)
class GatewayTable:
    """What one Gateway's server does with a request."""

    gateway: ObjectKey
    rules: tuple[RouteRule, ...] = ()

    def match(self, host: str, path: str) -> RouteRule | None:
        """The rule a request goes to, by the Gateway API's precedence; None: 404."""
        host = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
        best: tuple[Any, ...] | None = None
        chosen: RouteRule | None = None
        for rule in self.rules:
            host_rank = _host_rank(rule.hostnames, host)
            if host_rank is None or not _path_matches(rule.path_type, rule.path, path):
                continue
            rank = (host_rank, rule.path_type == "Exact", len(rule.path),
                    _Reverse(rule.created), _Reverse("/".join(rule.route)), -rule.index)
            if best is None or rank > best:
                best, chosen = rank, rule
        return chosen


@dataclass(frozen=True, order=False)
class _Reverse:
    """Sorts the other way round (older and alphabetically first rank higher)."""

    value: str

    def __lt__(self, other: _Reverse) -> bool:
        return self.value > other.value

    def __gt__(self, other: _Reverse) -> bool:
        return self.value < other.value


def _host_rank(hostnames: tuple[str, ...], host: str) -> tuple[int, int] | None:
    """How specifically ``hostnames`` match ``host``: exact over longest wildcard over any."""
    if not hostnames:
        return (0, 0)
    ranks = [(2, len(name)) if name == host else (1, len(name))
             for name in hostnames
             if name == host or (name.startswith("*.") and host.endswith(name[1:]))]
    return max(ranks) if ranks else None


def _path_matches(kind: str, value: str, path: str) -> bool:
    path = path.split("?", 1)[0]
    if kind == "Exact":
        return path == value
    prefix = value.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Decision:
    """Where one request goes: an endpoint, or the status code the gateway answers."""

    backend: str | None               # "namespace/name" of the chosen Service
    endpoint: tuple[str, int] | None = None
    status: int | None = None         # 500 invalid or no backend, 503 no ready endpoint


def choose(rule: RouteRule, rng: random.Random) -> Decision:
    """Draw a backend by weight, then one of its ready endpoints."""
    weighted = [backend for backend in rule.backends if backend.weight > 0]
    if not weighted:
        return Decision(None, status=500)
    backend = rng.choices(weighted, weights=[b.weight for b in weighted])[0]
    if backend.invalid is not None:
        return Decision(backend.service, status=500)
    if not backend.endpoints:
        return Decision(backend.service, status=503)
    return Decision(backend.service, endpoint=rng.choice(backend.endpoints))


@dataclass
class Desired:
    """What :func:`compute` found: the routing tables and every status this owns."""

    tables: dict[ObjectKey, GatewayTable] = field(default_factory=dict)
    statuses: dict[StatusKey, JsonObject] = field(default_factory=dict)


# --------------------------------------------------------------------------- conditions


def _condition(old: Sequence[Mapping[str, Any]], kind: str, ok: bool, reason: str,
               message: str, generation: int, now: str) -> JsonObject:
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == kind), None)
    since = (previous.get("lastTransitionTime") if previous is not None
             and previous.get("status") == status else None)
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since or now}


def _generation(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def _conditions_of(obj: Mapping[str, Any]) -> list[JsonObject]:
    return list((obj.get("status") or {}).get("conditions") or [])


# --------------------------------------------------------------------------- compute


@dataclass(frozen=True)
class _Listener:
    name: str
    hostname: str | None
    port: int
    allowed: Mapping[str, Any]        # allowedRoutes
    problem: str | None               # why the listener is not accepted


@dataclass
class _Resolver:
    """Backend lookups in one snapshot."""

    services: dict[ObjectKey, JsonObject]
    slices: dict[ObjectKey, list[JsonObject]]
    grants: list[JsonObject]

    @classmethod
    def of(cls, snapshot: Snapshot) -> _Resolver:
        slices: dict[ObjectKey, list[JsonObject]] = {}
        for item in snapshot.endpoint_slices:
            namespace, _ = object_key(item)
            service = ((item.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            if service:
                slices.setdefault((namespace, str(service)), []).append(item)
        return cls({object_key(s): s for s in snapshot.services}, slices,
                   list(snapshot.reference_grants))

    def permitted(self, route_namespace: str, namespace: str, name: str) -> bool:
        for grant in self.grants:
            if object_key(grant)[0] != namespace:
                continue
            spec = grant.get("spec") or {}
            sources = any(entry.get("group") == GROUP and entry.get("kind") == "HTTPRoute"
                          and entry.get("namespace") == route_namespace
                          for entry in spec.get("from") or ())
            targets = any((entry.get("group") or "") == "" and entry.get("kind") == "Service"
                          and entry.get("name") in (None, "", name)
                          for entry in spec.get("to") or ())
            if sources and targets:
                return True
        return False

    def backend(self, route_namespace: str, ref: Mapping[str, Any]) -> Backend:
        namespace = str(ref.get("namespace") or route_namespace)
        name = str(ref.get("name") or "")
        weight = int(ref.get("weight", 1))
        service_id = f"{namespace}/{name}"
        if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
            return Backend(service_id, weight, invalid="InvalidKind")
        if namespace != route_namespace and not self.permitted(route_namespace, namespace, name):
            return Backend(service_id, weight, invalid="RefNotPermitted")
        service = self.services.get((namespace, name))
        port = ref.get("port")
        service_port = next((p for p in ((service or {}).get("spec") or {}).get("ports") or ()
                             if p.get("port") == port), None)
        if service is None or service_port is None:
            return Backend(service_id, weight, invalid="BackendNotFound")
        return Backend(service_id, weight, endpoints=self._ready(
            namespace, name, service_port.get("name") or ""))

    def _ready(self, namespace: str, service: str, port_name: str) -> tuple[tuple[str, int], ...]:
        found: dict[tuple[str, int], None] = {}
        for item in self.slices.get((namespace, service), ()):
            ports = [p.get("port") for p in item.get("ports") or ()
                     if (p.get("name") or "") == port_name
                     and (p.get("protocol") or "TCP") == "TCP" and p.get("port")]
            if not ports or item.get("addressType") != "IPv4":
                continue
            for endpoint in item.get("endpoints") or ():
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                for address in (endpoint.get("addresses") or [])[:1]:
                    found[(str(address), int(ports[0]))] = None
        return tuple(sorted(found))


_BACKEND_MESSAGES = {
    "InvalidKind": "only core Services are supported as backends",
    "RefNotPermitted": "no ReferenceGrant allows this route to use the Service",
    "BackendNotFound": "the Service, or its port, does not exist",
}


def _unsupported(rule: Mapping[str, Any]) -> list[str]:
    """What a rule asks for that this gateway does not do."""
    found = []
    if rule.get("filters"):
        found.append("filters")
    for ref in rule.get("backendRefs") or ():
        if ref.get("filters"):
            found.append("backendRefs[].filters")
    for match in rule.get("matches") or ():
        if match.get("headers") or match.get("queryParams") or match.get("method"):
            found.append("header, query or method matches")
        kind = (match.get("path") or {}).get("type", "PathPrefix")
        if kind not in ("Exact", "PathPrefix"):
            found.append(f"path type {kind}")
    return sorted(set(found))


def _listeners(gateway: Mapping[str, Any]) -> list[_Listener]:
    listeners = []
    for item in (gateway.get("spec") or {}).get("listeners") or ():
        protocol = item.get("protocol")
        problem = None if protocol == "HTTP" else f"protocol {protocol} is not supported"
        listeners.append(_Listener(str(item.get("name")), item.get("hostname"),
                                   int(item.get("port") or 0),
                                   item.get("allowedRoutes") or {}, problem))
    return listeners


def _allows(listener: _Listener, gateway_namespace: str, route_namespace: str) -> str | None:
    """None when the listener admits HTTPRoutes of ``route_namespace``, else why not."""
    kinds = listener.allowed.get("kinds")
    if kinds and not any((k.get("group") or GROUP) == GROUP and k.get("kind") == "HTTPRoute"
                         for k in kinds):
        return f"listener {listener.name} does not allow HTTPRoutes"
    source = (listener.allowed.get("namespaces") or {}).get("from", "Same")
    if source == "All" or (source == "Same" and route_namespace == gateway_namespace):
        return None
    if source == "Selector":
        return f"listener {listener.name}: namespace selectors are not supported here"
    return f"listener {listener.name} allows routes from its own namespace only"


def _intersect(route_hostnames: Sequence[str], listener: str | None) -> tuple[str, ...] | None:
    """The hostnames a route serves on a listener; () for any, None for none."""
    if listener is None:
        return tuple(route_hostnames)
    if not route_hostnames:
        return (listener,)
    found = []
    for name in route_hostnames:
        if name == listener or (listener.startswith("*.") and name.endswith(listener[1:])):
            found.append(name)
        elif name.startswith("*.") and listener.endswith(name[1:]):
            found.append(listener)
    return tuple(found) or None


def _owned_gateways(snapshot: Snapshot, controller_name: str) -> dict[ObjectKey, JsonObject]:
    classes = {object_key(c)[1] for c in snapshot.gateway_classes
               if (c.get("spec") or {}).get("controllerName") == controller_name}
    return {object_key(g): g for g in snapshot.gateways
            if (g.get("spec") or {}).get("gatewayClassName") in classes}


def _parent_gateway(route_namespace: str, ref: Mapping[str, Any]) -> ObjectKey | None:
    if (ref.get("group") or GROUP) != GROUP or (ref.get("kind") or "Gateway") != "Gateway":
        return None
    return str(ref.get("namespace") or route_namespace), str(ref.get("name") or "")


def compute(snapshot: Snapshot, *, controller_name: str = CONTROLLER_NAME,
            now: str) -> Desired:
    """The routing tables and the statuses of everything this implementation owns."""
    desired = Desired()
    gateways = _owned_gateways(snapshot, controller_name)
    listeners = {key: _listeners(gateway) for key, gateway in gateways.items()}
    attached: Counter[tuple[ObjectKey, str]] = Counter()
    rules: dict[ObjectKey, list[RouteRule]] = {key: [] for key in gateways}
    resolver = _Resolver.of(snapshot)

    for route in sorted(snapshot.routes, key=object_key):
        parents = _route_parents(route, gateways, listeners, resolver, attached, rules,
                                 controller_name, now)
        if parents is not None:
            desired.statuses[("httproutes", object_key(route))] = parents

    for key, gateway in gateways.items():
        desired.tables[key] = GatewayTable(key, tuple(rules[key]))
        desired.statuses[("gateways", key)] = _gateway_status(
            gateway, listeners[key], attached, now)
    for item in snapshot.gateway_classes:
        if (item.get("spec") or {}).get("controllerName") == controller_name:
            desired.statuses[("gatewayclasses", object_key(item))] = {
                **(item.get("status") or {}),
                "conditions": [_condition(_conditions_of(item), "Accepted", True, "Accepted",
                                          f"handled by {controller_name}", _generation(item),
                                          now)]}
    return desired


def _route_parents(route: JsonObject, gateways: Mapping[ObjectKey, JsonObject],
                   listeners: Mapping[ObjectKey, list[_Listener]], resolver: _Resolver,
                   attached: Counter[tuple[ObjectKey, str]],
                   rules: dict[ObjectKey, list[RouteRule]], controller_name: str,
                   now: str) -> JsonObject | None:
    """The route's new status (None when no parent is ours); fills ``rules``/``attached``."""
    namespace, _ = object_key(route)
    spec = route.get("spec") or {}
    generation = _generation(route)
    old_parents = list((route.get("status") or {}).get("parents") or [])
    kept = [p for p in old_parents if p.get("controllerName") != controller_name]
    ours = []
    route_rules = list(spec.get("rules") or [])
    resolved = [[resolver.backend(namespace, ref) for ref in rule.get("backendRefs") or ()]
                for rule in route_rules]
    problems = [b for rule in resolved for b in rule if b.invalid is not None]
    unsupported = sorted({item for rule in route_rules for item in _unsupported(rule)})
    for ref in spec.get("parentRefs") or ():
        key = _parent_gateway(namespace, ref)
        if key is None or key not in gateways:
            continue
        accepted, reason, message, hosts = _accept(ref, key, namespace, spec, listeners[key])
        if accepted and unsupported:
            accepted, reason = False, "UnsupportedValue"
            message = f"not supported by the simulated gateway: {', '.join(unsupported)}"
        if accepted:
            for listener_name in hosts:
                attached[(key, listener_name)] += 1
            # Listeners share one server here: a route serves the union of its hostnames,
            # any host at all if one listener admits any.
            effective = () if () in hosts.values() else tuple(
                sorted({h for names in hosts.values() for h in names}))
            rules[key].extend(_rules_of(route, route_rules, resolved, effective))
        previous: Mapping[str, Any] = next(
            (p for p in old_parents if p.get("controllerName") == controller_name
             and p.get("parentRef") == ref), {})
        old_conditions = previous.get("conditions") or []
        refs_reason, refs_message = "ResolvedRefs", "all backend references are resolved"
        if problems:
            refs_reason = problems[0].invalid or ""
            refs_message = "; ".join(f"{b.service}: {_BACKEND_MESSAGES[b.invalid or '']}"
                                     for b in problems)
        ours.append({"parentRef": copy.deepcopy(ref), "controllerName": controller_name,
                     "conditions": [
                         _condition(old_conditions, "Accepted", accepted, reason, message,
                                    generation, now),
                         _condition(old_conditions, "ResolvedRefs", not problems, refs_reason,
                                    refs_message, generation, now)]})
    if not ours and not any(p.get("controllerName") == controller_name for p in old_parents):
        return None
    return {**(route.get("status") or {}), "parents": kept + ours}


def _accept(ref: Mapping[str, Any], gateway: ObjectKey, route_namespace: str,
            spec: Mapping[str, Any], listeners: Sequence[_Listener],
            ) -> tuple[bool, str, str, dict[str, tuple[str, ...]]]:
    """(accepted, reason, message, effective hostnames by listener attached to)."""
    section, port = ref.get("sectionName"), ref.get("port")
    candidates = [item for item in listeners if item.problem is None
                  and (section is None or item.name == section)
                  and (port is None or item.port == port)]
    if not candidates:
        return (False, "NoMatchingParent",
                f"Gateway {'/'.join(gateway)} has no accepted listener"
                + (f" named {section}" if section else "") + (f" on port {port}" if port else ""),
                {})
    refusals = [_allows(item, gateway[0], route_namespace) for item in candidates]
    allowed = [item for item, refusal in zip(candidates, refusals, strict=True)
               if refusal is None]
    if not allowed:
        return False, "NotAllowedByListeners", "; ".join(r for r in refusals if r), {}
    hosts = {item.name: names for item in allowed
             if (names := _intersect(spec.get("hostnames") or [], item.hostname)) is not None}
    if not hosts:
        return (False, "NoMatchingListenerHostname",
                "no listener hostname intersects the route's hostnames", {})
    return True, "Accepted", f"accepted by {'/'.join(gateway)}", hosts


def _rules_of(route: JsonObject, route_rules: Sequence[Mapping[str, Any]],
              resolved: Sequence[Sequence[Backend]], hostnames: tuple[str, ...],
              ) -> Iterable[RouteRule]:
    key = object_key(route)
    created = str((route.get("metadata") or {}).get("creationTimestamp") or "")
    for index, (rule, backends) in enumerate(zip(route_rules, resolved, strict=True)):
        for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
            path = match.get("path") or {}
            yield RouteRule(key, index, hostnames, str(path.get("type", "PathPrefix")),
                            str(path.get("value", "/")), tuple(backends), created)


def _gateway_status(gateway: JsonObject, listeners: Sequence[_Listener],
                    attached: Counter[tuple[ObjectKey, str]], now: str) -> JsonObject:
    key, generation = object_key(gateway), _generation(gateway)
    status = gateway.get("status") or {}
    old_listeners = {item.get("name"): item for item in status.get("listeners") or ()}
    valid = [item for item in listeners if item.problem is None]
    listener_status = []
    for item in listeners:
        old = (old_listeners.get(item.name) or {}).get("conditions") or []
        ok = item.problem is None
        reason = "Accepted" if ok else "UnsupportedProtocol"
        listener_status.append({
            "name": item.name,
            "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}] if ok else [],
            "attachedRoutes": attached[(key, item.name)],
            "conditions": [
                _condition(old, "Accepted", ok, reason, item.problem or "listener accepted",
                           generation, now),
                _condition(old, "Programmed", ok, "Programmed" if ok else "Invalid",
                           item.problem or "listener programmed", generation, now),
                _condition(old, "ResolvedRefs", True, "ResolvedRefs", "no references",
                           generation, now),
            ]})
    old = _conditions_of(gateway)
    ok = bool(valid)
    return {
        **status,
        "addresses": [{"type": "IPAddress", "value": GATEWAY_ADDRESS}],
        "conditions": [
            _condition(old, "Accepted", ok, "Accepted" if ok else "ListenersNotValid",
                       "gateway accepted" if ok else "no listener is valid", generation, now),
            _condition(old, "Programmed", ok, "Programmed" if ok else "Invalid",
                       "gateway programmed" if ok else "no listener is valid", generation, now),
        ],
        "listeners": listener_status,
    }


# --------------------------------------------------------------------------- data plane


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, gateway: SimulatedGateway, key: ObjectKey) -> None:
        self.gateway, self.key = gateway, key
        super().__init__((GATEWAY_ADDRESS, 0), _ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30.0
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: thousands of requests per second."""

    def do_GET(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, payload = self.server.gateway.forward(
            self.server.key, self.command, self.path, dict(self.headers.items()), body)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _reply(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps(
        {"error": message}).encode()


# --------------------------------------------------------------------------- the gateway


class SimulatedGateway:
    """``start()`` watches and serves; ``url(ns, name)`` is a Gateway's address."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *,
                 resolve: Callable[[str], str], controller_name: str = CONTROLLER_NAME,
                 seed: int = 0,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """``resolve`` maps a pod IP to the loopback address where it listens."""
        self.controller_name = controller_name
        self._resolve = resolve
        self._wall_clock = wall_clock
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        core = kubernetes.client.CoreV1Api(api_client)
        discovery = kubernetes.client.DiscoveryV1Api(api_client)
        self._loop = LevelLoop("gateway", self.reconcile)
        kick = self._loop.kick
        custom = self._custom
        self._informers = {
            "gatewayclasses": Informer("gatewayclasses", custom.list_cluster_custom_object,
                                       GROUP, VERSION, "gatewayclasses", on_change=kick),
            "gateways": Informer("gateways", custom.list_cluster_custom_object,
                                 GROUP, VERSION, "gateways", on_change=kick),
            "httproutes": Informer("httproutes", custom.list_cluster_custom_object,
                                   GROUP, VERSION, "httproutes", on_change=kick),
            "referencegrants": Informer("referencegrants", custom.list_cluster_custom_object,
                                        GROUP, VERSION, "referencegrants", on_change=kick),
            "services": Informer("services", core.list_service_for_all_namespaces,
                                 on_change=kick),
            "endpointslices": Informer("endpointslices",
                                       discovery.list_endpoint_slice_for_all_namespaces,
                                       on_change=kick),
        }
        self._tables: dict[ObjectKey, GatewayTable] = {}
        self._servers: dict[ObjectKey, tuple[_ProxyServer, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._local = threading.local()
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (route, service, status)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self._loop.start()
        for informer in self._informers.values():
            informer.start()
        for informer in self._informers.values():
            if not informer.synced.wait(timeout):
                raise TimeoutError(f"gateway: {informer.name} not listed within {timeout:.0f}s")

    def stop(self) -> None:
        for informer in self._informers.values():
            informer.stop()
        self._loop.stop()
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5.0)

    def __enter__(self) -> SimulatedGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, namespace: str, name: str) -> str:
        """``http://127.0.0.1:<port>`` of a programmed Gateway."""
        with self._lock:
            entry = self._servers.get((namespace, name))
        if entry is None:
            raise KeyError(f"Gateway {namespace}/{name} is not programmed by "
                           f"{self.controller_name}")
        host, port = entry[0].server_address[:2]
        return f"http://{host!s}:{port}"

    def table(self, namespace: str, name: str) -> GatewayTable | None:
        with self._lock:
            return self._tables.get((namespace, name))

    # -- control plane ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        items = {name: informer.items() for name, informer in self._informers.items()}
        return Snapshot(items["gatewayclasses"], items["gateways"], items["httproutes"],
                        items["services"], items["endpointslices"], items["referencegrants"])

    def reconcile(self) -> None:
        """Program the data plane, then write the statuses that changed."""
        snapshot = self.snapshot()
        now = self._wall_clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        desired = compute(snapshot, controller_name=self.controller_name, now=now)
        self._program(desired.tables)
        current = {("gatewayclasses", object_key(o)): o for o in snapshot.gateway_classes}
        current |= {("gateways", object_key(o)): o for o in snapshot.gateways}
        current |= {("httproutes", object_key(o)): o for o in snapshot.routes}
        for (plural, key), status in desired.statuses.items():
            obj = current[(plural, key)]
            if (obj.get("status") or {}) != status:
                self._write_status(plural, obj, status)

    def _program(self, tables: Mapping[ObjectKey, GatewayTable]) -> None:
        for key in tables:
            if key not in self._servers:
                server = _ProxyServer(self, key)
                thread = threading.Thread(target=server.serve_forever,
                                          kwargs={"poll_interval": 0.1},
                                          name=f"gateway-{'-'.join(key)}", daemon=True)
                thread.start()
                with self._lock:
                    self._servers[key] = (server, thread)
        with self._lock:
            self._tables = dict(tables)
            gone = [key for key in self._servers if key not in tables]
            stopped = [self._servers.pop(key) for key in gone]
        for server, thread in stopped:
            server.shutdown()
            server.server_close()
            thread.join(5.0)

    def _write_status(self, plural: Plural, obj: JsonObject, status: JsonObject) -> None:
        namespace, name = object_key(obj)
        body = {**obj, "status": status}   # with its resourceVersion: 409 when stale
        try:
            if plural == "gatewayclasses":
                self._custom.replace_cluster_custom_object_status(
                    GROUP, VERSION, plural, name, body, _request_timeout=_API_TIMEOUT)
            else:
                self._custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, body, _request_timeout=_API_TIMEOUT)
        except ApiException as error:
            if error.status not in (404, 409):   # gone, or a newer version is on its way
                raise

    # -- data plane -----------------------------------------------------------------------

    def forward(self, key: ObjectKey, method: str, path: str, headers: Mapping[str, str],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request that reached Gateway ``key``."""
        with self._lock:
            table = self._tables.get(key)
        host = next((v for k, v in headers.items() if k.lower() == "host"), "")
        rule = table.match(host, path) if table is not None else None
        if rule is None:
            return _reply(404, f"no route for {host}{path}")
        with self._lock:
            decision = choose(rule, self._rng)
        route = "/".join(rule.route)
        if decision.endpoint is None:
            self._count(route, decision.backend or "", decision.status or 500)
            return _reply(decision.status or 500, f"no usable backend ({decision.backend})")
        ip, port = decision.endpoint
        try:
            status, reply_headers, payload = self._send(
                (self._resolve(ip), port), method, path, headers, body)
        except (OSError, http.client.HTTPException) as error:
            self._count(route, decision.backend or "", 502)
            return _reply(502, f"upstream {ip}:{port} failed: {error}")
        self._count(route, decision.backend or "", status)
        return status, reply_headers, payload

    def _count(self, route: str, service: str, status: int) -> None:
        with self._lock:
            self.requests[(route, service, status)] += 1

    def _send(self, address: tuple[str, int], method: str, path: str,
              headers: Mapping[str, str], body: bytes,
              ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One upstream exchange on this thread's keep-alive connection to ``address``;
        a reused connection the endpoint closed while idle is retried once."""
        pool: dict[tuple[str, int], http.client.HTTPConnection] = getattr(
            self._local, "pool", None) or {}
        self._local.pool = pool
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        forwarded["Host"] = next((v for k, v in headers.items() if k.lower() == "host"), "")
        for attempt in (1, 2):
            reused = address in pool
            connection = pool.get(address) or http.client.HTTPConnection(
                *address, timeout=_UPSTREAM_TIMEOUT_S)
            pool[address] = connection
            try:
                connection.request(method, path, body=body or None, headers=forwarded)
                response = connection.getresponse()
                payload = response.read()
                reply = [(k, v) for k, v in response.getheaders()
                         if k.lower() not in _HOP_BY_HOP]
                return response.status, reply, payload
            except (OSError, http.client.HTTPException):
                with contextlib.suppress(Exception):
                    pool.pop(address).close()
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")
