"""The controller's three faces are wired apart: each listener setting has its own container
port, its own Service and one NetworkPolicy opening from the one peer it serves, and the
Ingress example in docs/operations.md reaches the Slack face and nothing else.

Pure checks of the rendered overlays and of the documentation; no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy_helpers import (
    ROOT,
    Manifest,
    container_port,
    controller_container,
    documented_ingress,
    env_of,
    find,
    listen_port,
    validate_schema,
)
from pydantic import BaseModel

from controller.settings import Settings
from simulations.kube.build import Binaries

DAEMON = ROOT / "controller" / "daemon.py"


@dataclass(frozen=True)
class Face:
    variable: str        # the listener's address setting
    service: str         # the one Service that forwards to it
    peer: str | None     # the namespace the NetworkPolicy admits it from; None: anywhere


FACES = (
    # Health, readiness and /metrics: Prometheus (kube-prometheus-stack in `monitoring`).
    Face("ROLLWISE_LISTEN_ADDRESS", "rollwise-controller", "monitoring"),
    # POST /slack/interactions: the Ingress controller.
    Face("ROLLWISE_SLACK__LISTEN_ADDRESS", "rollwise-slack", "ingress-nginx"),
    # The admission webhooks: the API server, whose address no selector can name.
    Face("ROLLWISE_WEBHOOK__LISTEN_ADDRESS", "rollwise-webhook", None),
)


def _listener_variables() -> set[str]:
    """Every listen-address setting the controller has, as its environment variable."""
    names = {"ROLLWISE_LISTEN_ADDRESS"} if "listen_address" in Settings.model_fields else set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if (isinstance(model, type) and issubclass(model, BaseModel)
                and "listen_address" in model.model_fields):
            names.add(f"ROLLWISE_{section.upper()}__LISTEN_ADDRESS")
    return names


def _face_port(objects: list[Manifest], face: Face) -> int:
    return listen_port(str(env_of(controller_container(objects))[face.variable]))


def _service_target_ports(objects: list[Manifest], service: Manifest) -> set[int]:
    return {container_port(objects, p["targetPort"]) for p in service["spec"]["ports"]}


def test_every_listener_of_the_controller_is_a_face_here() -> None:
    # A listener added to the settings without a port, Service and policy here fails.
    assert _listener_variables() == {face.variable for face in FACES}


def test_each_face_listens_on_all_interfaces_on_its_own_container_port(
        objects: list[Manifest]) -> None:
    env = env_of(controller_container(objects))
    for face in FACES:
        host, _, _ = str(env[face.variable]).rpartition(":")
        assert host == "0.0.0.0", f"{face.variable}: the default (loopback) is unreachable"
        container_port(objects, _face_port(objects, face))
    ports = [_face_port(objects, face) for face in FACES]
    assert len(set(ports)) == len(FACES), f"two faces share a port: {ports}"
    declared = {p["containerPort"] for p in controller_container(objects)["ports"]}
    assert declared == set(ports), "a container port no listener serves"


def test_every_service_forwards_to_named_ports_of_the_controller(
        objects: list[Manifest]) -> None:
    deployment = find(objects, "Deployment", "rollwise-controller")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for service in (o for o in objects if o["kind"] == "Service"):
        name = service["metadata"]["name"]
        assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"], name
        assert service["spec"]["selector"].items() <= pod_labels.items(), name
        for port in service["spec"]["ports"]:
            # By name: renumbering a container port cannot leave a Service behind.
            assert isinstance(port["targetPort"], str), f"{name}: {port}"
            container_port(objects, port["targetPort"])


def test_each_face_has_one_service_that_forwards_to_it_alone(objects: list[Manifest]) -> None:
    services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    assert services == {face.service for face in FACES}
    for face in FACES:
        service = find(objects, "Service", face.service)
        assert _service_target_ports(objects, service) == {_face_port(objects, face)}, (
            face.service)


def _ingress_openings(policy: Manifest) -> set[tuple[str | None, int]]:
    """(peer namespace or None for anywhere, port) for every opening of the ingress rules."""
    openings: set[tuple[str | None, int]] = set()
    for rule in policy["spec"]["ingress"]:
        assert rule.get("ports"), f"a rule without ports opens every port: {rule}"
        peers: list[str | None] = []
        for peer in rule.get("from") or [None]:
            if peer is None:
                peers.append(None)
                continue
            assert set(peer) == {"namespaceSelector"}, f"only whole namespaces here: {peer}"
            labels = peer["namespaceSelector"]
            assert set(labels) == {"matchLabels"}, peer
            (namespace,) = labels["matchLabels"].values()
            peers.append(namespace)
        for port in rule["ports"]:
            assert port.get("protocol", "TCP") == "TCP" and "endPort" not in port, port
            openings |= {(peer, int(port["port"])) for peer in peers}
    return openings


def test_the_network_policy_admits_each_face_from_its_peer_only(
        objects: list[Manifest]) -> None:
    policy = find(objects, "NetworkPolicy")
    assert "Ingress" in policy["spec"]["policyTypes"]
    assert _ingress_openings(policy) == {(face.peer, _face_port(objects, face))
                                         for face in FACES}


# -- the Ingress example of docs/operations.md -----------------------------------------


def _ingress_backends(ingress: Manifest) -> list[Manifest]:
    spec = ingress["spec"]
    backends = [spec["defaultBackend"]] if "defaultBackend" in spec else []
    for rule in spec.get("rules", []):
        backends += [path["backend"] for path in rule.get("http", {}).get("paths", [])]
    return backends


def test_the_ingress_example_reaches_only_the_slack_service(objects: list[Manifest]) -> None:
    ingress = documented_ingress()
    slack = next(f for f in FACES if f.service == "rollwise-slack")
    service = find(objects, "Service", slack.service)
    assert ingress["metadata"]["namespace"] == service["metadata"]["namespace"]
    backends = _ingress_backends(ingress)
    assert backends, "the example routes nowhere"
    service_ports = {p["port"] for p in service["spec"]["ports"]}
    for backend in backends:
        assert set(backend) == {"service"}, f"not a Service backend: {backend}"
        assert backend["service"]["name"] == slack.service, backend
        assert backend["service"]["port"] == {"number": next(iter(service_ports))}, backend
    # The one path the daemon serves there.
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/slack/interactions", "Exact")]
    assert '("POST", "/slack/interactions")' in DAEMON.read_text()


def test_the_ingress_example_is_valid_kubernetes(kube_binaries: Binaries) -> None:
    validate_schema(documented_ingress(), kube_binaries.version)
