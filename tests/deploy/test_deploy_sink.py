"""The prediction sink's objects (deploy/base/sink/): what it runs as, what it may read,
what Prometheus scrapes, in every overlay."""

from __future__ import annotations

import pytest
from conftest import Render
from deploy_helpers import DEPLOY, Manifest, env_of, find, is_sink

from controller.sink.settings import unknown_variables

NAME = "rollwise-prediction-sink"


def _sink(everything: list[Manifest]) -> list[Manifest]:
    return [o for o in everything if is_sink(o)]


def _container(objects: list[Manifest]) -> Manifest:
    (container,) = find(objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_sink_is_installed_with_its_own_account(everything: list[Manifest]) -> None:
    sink = _sink(everything)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in sink) == sorted(
        (kind, NAME) for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                  "Deployment", "Service", "ServiceMonitor"))
    pod = find(sink, "Deployment", NAME)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME
    binding = find(sink, "ClusterRoleBinding", NAME)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME,
                                    "namespace": "rollwise-system"}]
    assert binding["roleRef"]["name"] == NAME


def test_the_sink_only_reads_pods_and_their_owners(everything: list[Manifest]) -> None:
    rules = find(_sink(everything), "ClusterRole", NAME)["rules"]
    grants = {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
              for resource in rule["resources"] for verb in rule["verbs"]}
    assert grants == {("", "pods", "get"), ("apps", "replicasets", "get"),
                      ("apps", "deployments", "get")}


def test_the_sink_runs_the_command_with_settings_it_knows(everything: list[Manifest]) -> None:
    container = _container(everything)
    assert container["command"] == ["rollwise", "prediction-sink"]
    env = env_of(container)
    assert unknown_variables({k: str(v) for k, v in env.items()}) == []
    assert env["ROLLWISE_SINK_LISTEN_ADDRESS"] == "0.0.0.0:8080"
    pod = find(everything, "Deployment", NAME)["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]


def test_the_settings_load_as_the_pod_loads_them(everything: list[Manifest],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.sink.histograms import DEFAULT_BOUNDS
    from controller.sink.settings import load_sink_settings

    for name, value in env_of(_container(everything)).items():
        monkeypatch.setenv(name, str(value))
    settings = load_sink_settings()
    assert tuple(settings.buckets) == DEFAULT_BOUNDS


def test_prometheus_scrapes_the_sink_and_keeps_the_models_namespace(
        everything: list[Manifest]) -> None:
    sink = _sink(everything)
    monitor = find(sink, "ServiceMonitor", NAME)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True and endpoint["path"] == "/metrics"
    service = find(sink, "Service", NAME)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    (port,) = service["spec"]["ports"]
    assert port["name"] == endpoint["port"] and port["targetPort"] == "http"
    pod_labels = find(sink, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # and the controller's ServiceMonitor does not pick the sink up (its job label is the
    # controller's alerts' selector)
    controller_monitor = find(everything, "ServiceMonitor", "rollwise-controller")
    assert not (controller_monitor["spec"]["selector"]["matchLabels"].items()
                <= service["metadata"]["labels"].items())


def test_the_probes_are_routes_the_sink_serves(everything: list[Manifest]) -> None:
    from controller.sink.histograms import PredictionHistograms
    from controller.sink.revisions import FakeOwners, RevisionMapper
    from controller.sink.server import PredictionSink

    routes = PredictionSink(PredictionHistograms(), RevisionMapper(FakeOwners())).routes()
    container = _container(everything)
    for probe in ("livenessProbe", "readinessProbe"):
        assert ("GET", container[probe]["httpGet"]["path"]) in routes


def test_base_includes_the_sink(render: Render) -> None:
    assert _sink(render(DEPLOY / "base")), "deploy/base/kustomization.yaml lists sink/"
