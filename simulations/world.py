"""The whole simulated world in one context manager: the real control plane, the
simulated KServe controller, one model endpoint per revision, real Prometheus scraping
them, and traffic generators following each InferenceService's live split.

I/O. Callers: ``rollwise sim up``, the end-to-end tests and the demo. The controller
under test reaches this world only through a kubeconfig and a Prometheus URL.

A model's behaviour is a property of the model, so it is looked up by the predictor's
``storageUri`` (``models`` in ``WorldConfig``); a URI listed in ``never_ready`` gives
a revision that never becomes ready (a broken model).

With ``WorldConfig(deployments=True)`` the world also runs plain Deployments for real:
kube-controller-manager (deployment, replicaset, endpointslice controllers and the garbage
collector), a node agent (simulations.nodes) that runs each pod as a model endpoint, and a
Gateway API gateway (simulations.gateway) with one Gateway, ``GATEWAY_NAMESPACE/GATEWAY_NAME``,
open to routes of every namespace. ``create_model_deployment`` makes what a user owns (a
Deployment, its Service and an HTTPRoute to it), ``set_deployment_model`` rolls it to
another model, and ``start_route_traffic`` sends requests through the gateway. A pod's
model is its container's ``STORAGE_URI``; ``ready_delays`` and ``never_ready`` apply to it.

With ``WorldConfig(prediction_sink=True)`` drift data travel as in a cluster with KServe's
payload logger: the world runs the real ``rollwise prediction-sink`` as its own process
(simulations.sink_process, with its shipped RBAC), the endpoints send it each prediction's
request and response CloudEvents instead of exporting ``kserve_model_prediction``
(simulations.endpoints, ``LoggerAgent``), Prometheus scrapes the sink, and each revision's
pod exists in the API server with the owner chain Knative or KServe would give it
(Pod -> ReplicaSet -> Deployment -> Revision, or -> the InferenceService in Standard mode),
which is all the sink has to map an event's pod to its revision. Not with
``deployments=True`` (kube-controller-manager would run those Deployments).

Knative-mode and Standard-mode InferenceServices live side by side (the annotation
``serving.kserve.io/deploymentMode``, else ``default_deployment_mode``): a Standard-mode
predictor or canary gets one endpoint per ReplicaSet, exporting what its pod would
(``endpoints.STANDARD_FLAVOUR``), and its traffic follows the HTTPRoute named after it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from controller.kube.annotations import ANNOTATION_KEYS
from controller.routers.kserve_knative import storage_uri
from simulations.endpoints import (
    STANDARD_FLAVOUR,
    Behaviour,
    EndpointFleet,
    LoggerAgent,
    MetricsFlavour,
    RevisionIdentity,
)
from simulations.gateway import CONTROLLER_NAME, SimulatedGateway
from simulations.kserve import rules, standard
from simulations.kserve.controller import RevisionEvent, SimulatedKServe
from simulations.kube.build import PROJECT_ROOT, Binaries
from simulations.kube.certs import write_serving_pair
from simulations.kube.controlplane import Cluster, ControlPlane
from simulations.nodes import NodeAgent, PodNetwork
from simulations.prometheus import PrometheusServer
from simulations.sink_process import SinkProcess, sink_identity, sink_kubeconfig
from simulations.traffic import SPLIT_REFRESH_S, Split, TrafficGenerator, isvc_split, route_split

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
GATEWAY_CLASS, GATEWAY_NAMESPACE, GATEWAY_NAME = "rollwise-simulated", "gateway-system", "gateway"
MODEL_IMAGE = "rollwise.io/simulated-model-server:1"
MODEL_PORT, SERVICE_PORT = 8080, 80
_GATEWAY_READY_TIMEOUT_S = 30.0


def rbac_manifests(root: Path = PROJECT_ROOT) -> list[Path]:
    """The controller's shipped RBAC (deploy/rbac), which every end-to-end run enforces."""
    directory = root / "deploy" / "rbac"
    return sorted(p for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")


@dataclass
class WorldConfig:
    models: Mapping[str, Behaviour] = field(default_factory=dict)
    default_behaviour: Behaviour = field(default_factory=Behaviour)
    never_ready: frozenset[str] = frozenset()
    ready_delay: float = 1.0
    flavour: MetricsFlavour = "queue-proxy-legacy"
    namespaces: tuple[str, ...] = ("models",)
    seed: int = 0
    scrape_interval: str = "1s"          # Prometheus scrape (and rule evaluation)
    deployments: bool = False            # kube-controller-manager, a node, a gateway
    ready_delays: Mapping[str, float] = field(default_factory=dict)  # pods, by model URI
    default_deployment_mode: str = "Knative"   # KServe's deploy.defaultDeploymentMode
    prediction_sink: bool = False        # predictions as logger CloudEvents to the sink


class World:
    """``with World(config) as world:`` — everything up, and down again on exit."""

    def __init__(self, config: WorldConfig | None = None, *, binaries: Binaries | None = None,
                 workdir: Path | None = None) -> None:
        self.config = config or WorldConfig()
        self._binaries = binaries
        self._stack = contextlib.ExitStack()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="rollwise-world-"))
        self._behaviours: dict[str, Behaviour] = dict(self.config.models)
        self._serving: dict[str, list[tuple[str, str]]] = {}   # model URI -> (ns, revision)
        self._lock = threading.Lock()
        self.generators: list[TrafficGenerator] = []
        self._webhook_pair: tuple[Path, Path, bytes] | None = None
        self._dynamic_client: DynamicClient | None = None
        self.nodes: NodeAgent
        self.gateway: SimulatedGateway
        self.cluster: Cluster
        self.prometheus: PrometheusServer
        self.fleet: EndpointFleet
        self.kserve: SimulatedKServe
        self.admin: kubernetes.client.ApiClient
        self.sink: SinkProcess | None = None
        self._kserve_settings: rules.Settings

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> World:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        stack = self._stack
        self.audit_log = self.workdir / "audit.log"
        deployments = self.config.deployments
        self.cluster = stack.enter_context(ControlPlane(
            manifests=rbac_manifests(),
            binaries=self._binaries, apiserver_args=_audit_args(self.workdir, self.audit_log),
            controller_manager=deployments))
        self.admin = stack.enter_context(self.cluster.admin_api_client())
        logger = None
        if self.config.prediction_sink:
            if deployments:
                raise ValueError("prediction_sink needs deployments=False: the world's pod "
                                 "objects would be run by kube-controller-manager")
            self.sink = stack.enter_context(SinkProcess(
                sink_kubeconfig(self.cluster, self.workdir / "sink.kubeconfig"),
                self.workdir / "sink.log"))
            logger = LoggerAgent(self.sink.url)
        self.fleet = EndpointFleet(self.workdir / "targets.json", flavour=self.config.flavour,
                                   seed=self.config.seed, logger=logger)
        stack.callback(self.fleet.close)
        if self.sink is not None:
            self.fleet.add_target(self.sink.address)
        self.prometheus = stack.enter_context(
            PrometheusServer(sd_file=self.workdir / "targets.json",
                             scrape_interval=self.config.scrape_interval,
                             workdir=self.workdir / "prometheus"))
        core = kubernetes.client.CoreV1Api(self.admin)
        for namespace in self.config.namespaces:
            with contextlib.suppress(ApiException):
                core.create_namespace(kubernetes.client.V1Namespace(
                    metadata=kubernetes.client.V1ObjectMeta(name=namespace)))
            if self.sink is not None:
                # Pods need their namespace's default account (ServiceAccount admission);
                # kube-controller-manager, which would make it, is not running.
                with contextlib.suppress(ApiException):
                    core.create_namespaced_service_account(
                        namespace, kubernetes.client.V1ServiceAccount(
                            metadata=kubernetes.client.V1ObjectMeta(name="default")))
        # A correctly installed cluster keeps Rollwise's annotations out of revisions.
        settings = rules.Settings(annotation_disallowed=frozenset(ANNOTATION_KEYS),
                                  default_deployment_mode=self.config.default_deployment_mode)
        self._kserve_settings = settings
        self.kserve = SimulatedKServe(self.admin, ready_delay=self._ready_delay,
                                      on_revision_created=self._revision_created,
                                      on_revision_deleted=self._revision_deleted,
                                      settings=settings)
        self.kserve.start()
        stack.callback(self.kserve.stop)
        if deployments:
            self._start_deployments()
        stack.callback(self._stop_traffic)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._stack.close()
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # -- models and revisions -------------------------------------------------------------

    def behaviour(self, uri: str) -> Behaviour:
        with self._lock:
            return self._behaviours.get(uri, self.config.default_behaviour)

    def set_behaviour(self, uri: str, behaviour: Behaviour) -> None:
        """Change what a model does, live (inject a regression mid-run)."""
        with self._lock:
            self._behaviours[uri] = behaviour
            serving = list(self._serving.get(uri, ()))
        for namespace, revision in serving:
            endpoint = self.fleet.get(namespace, revision)
            if endpoint is not None:
                endpoint.set_behaviour(behaviour)

    def _ready_delay(self, predictor: Mapping[str, Any]) -> float | None:
        uri = storage_uri(predictor)
        return None if uri in self.config.never_ready else self.config.ready_delay

    def _revision_created(self, event: RevisionEvent) -> None:
        uri = storage_uri(event.predictor)
        if event.deployment:  # a Standard-mode ReplicaSet's pod
            endpoint = self.fleet.add(event.namespace, event.isvc, event.revision,
                                      self.behaviour(uri), flavour=STANDARD_FLAVOUR,
                                      pod_name=event.pod_name)
        else:
            endpoint = self.fleet.add(event.namespace, event.isvc, event.revision,
                                      self.behaviour(uri))
        if self.sink is not None:
            self._create_pod_objects(endpoint.identity, event.deployment)
        with self._lock:
            self._serving.setdefault(uri, []).append((event.namespace, event.revision))

    def _create_pod_objects(self, identity: RevisionIdentity, deployment: str) -> None:
        """The revision's pod and its owners as the API server would hold them: a Knative
        revision's Deployment ``<revision>-deployment`` is owned by its Revision; a
        Standard-mode Deployment (``deployment``) by the InferenceService."""
        namespace, pod = identity.namespace, identity.pod_name
        replica_set = pod.rsplit("-", 1)[0]
        if deployment:
            uid = self.get_isvc(namespace, identity.isvc)["metadata"]["uid"]
            owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                     "name": identity.isvc, "uid": uid}
        else:
            deployment = f"{identity.revision}-deployment"
            owner = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                     "name": identity.revision,
                     "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{identity.revision}"))}
        labels = {"app": deployment}
        pod_spec: dict[str, Any] = {"containers": [{"name": "kserve-container",
                                                    "image": MODEL_IMAGE}]}
        template = {"metadata": {"labels": labels}, "spec": pod_spec}

        def create(kind: str, api_version: str, name: str, parent: dict[str, Any],
                   spec: dict[str, Any]) -> dict[str, Any]:
            body = {"apiVersion": api_version, "kind": kind,
                    "metadata": {"name": name, "labels": labels, "ownerReferences": [
                        {**parent, "controller": True, "blockOwnerDeletion": True}]},
                    "spec": spec}
            resource = self._dynamic(body)
            try:
                return _as_dict(resource.create(body=body, namespace=namespace).to_dict())
            except ApiException as err:
                if err.status != 409:   # a promoted Standard-mode canary keeps its objects
                    raise
                return _as_dict(resource.get(name=name, namespace=namespace).to_dict())

        def ref(obj: dict[str, Any]) -> dict[str, Any]:
            return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                    "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}

        workload = {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}
        made = create("Deployment", "apps/v1", deployment, owner, workload)
        made = create("ReplicaSet", "apps/v1", replica_set, ref(made), workload)
        create("Pod", "v1", pod, ref(made), pod_spec)

    def _revision_deleted(self, namespace: str, isvc: str, revision: str) -> None:
        self.fleet.remove(namespace, isvc, revision)

    # -- Deployments, a node and a gateway ------------------------------------------------

    def _start_deployments(self) -> None:
        network = PodNetwork.random()
        self.nodes = NodeAgent(self.admin, self.fleet, network=network,
                               behaviour=self.behaviour, ready_delay=self._pod_ready_delay,
                               on_started=self._pod_started,
                               kubernetes_version=self._binaries_version())
        self.nodes.start()
        self._stack.callback(self.nodes.stop)
        self.gateway = SimulatedGateway(self.admin, resolve=network.local_address,
                                        seed=self.config.seed)
        self.gateway.start()
        self._stack.callback(self.gateway.stop)
        api = kubernetes.client.CustomObjectsApi(self.admin)
        kubernetes.client.CoreV1Api(self.admin).create_namespace(kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=GATEWAY_NAMESPACE)))
        api.create_cluster_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, "gatewayclasses", {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}", "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS}, "spec": {"controllerName": CONTROLLER_NAME}})
        api.create_namespaced_custom_object(
            GATEWAY_GROUP, GATEWAY_VERSION, GATEWAY_NAMESPACE, "gateways", {
                "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}", "kind": "Gateway",
                "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
                "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [{
                    "name": "http", "protocol": "HTTP", "port": SERVICE_PORT,
                    "allowedRoutes": {"namespaces": {"from": "All"}}}]}})
        deadline = time.monotonic() + _GATEWAY_READY_TIMEOUT_S
        while self.gateway.table(GATEWAY_NAMESPACE, GATEWAY_NAME) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Gateway {GATEWAY_NAMESPACE}/{GATEWAY_NAME} not programmed "
                                   f"within {_GATEWAY_READY_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

    def _binaries_version(self) -> str:
        return self._binaries.version if self._binaries is not None else "1.35.4"

    def _pod_ready_delay(self, uri: str) -> float | None:
        if uri in self.config.never_ready:
            return None
        return self.config.ready_delays.get(uri, self.config.ready_delay)

    def _pod_started(self, uri: str, namespace: str, pod: str) -> None:
        with self._lock:
            self._serving.setdefault(uri, []).append((namespace, pod))

    @property
    def gateway_url(self) -> str:
        """Where the world's Gateway listens (every route's hostnames are served there)."""
        return self.gateway.url(GATEWAY_NAMESPACE, GATEWAY_NAME)

    @staticmethod
    def route_hostname(namespace: str, name: str) -> str:
        return f"{name}.{namespace}.example.com"

    def create_model_deployment(self, namespace: str, name: str, uri: str, *,
                                replicas: int = 2, policy: str | None = None,
                                annotations: Mapping[str, str] | None = None,
                                ) -> dict[str, dict[str, Any]]:
        """What a user owns for a model served by plain Deployments: the Deployment
        (``app: <name>``, the model in env STORAGE_URI), its Service (port 80 to the
        container's ``http`` port) and an HTTPRoute sending ``<name>.<namespace>.example.com``
        to the Service through the world's Gateway. Returns the three as created."""
        annotations = {**({"rollwise.io/policy": policy} if policy else {}),
                       **(annotations or {})}
        labels = {"app": name}
        container = {"name": "kserve-container", "image": MODEL_IMAGE,
                     "env": [{"name": "STORAGE_URI", "value": uri},
                             {"name": "MODEL_NAME", "value": name}],
                     "ports": [{"name": "http", "containerPort": MODEL_PORT}]}
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container]}}}}
        service = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"selector": labels, "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http"}]}}
        route = {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
                     "hostnames": [self.route_hostname(namespace, name)],
                     "rules": [{"backendRefs": [
                         {"name": name, "port": SERVICE_PORT, "weight": 100}]}]}}
        return {kind: self._dynamic(body).create(body=body, namespace=namespace).to_dict()
                for kind, body in (("deployment", deployment), ("service", service),
                                   ("route", route))}

    def set_deployment_model(self, namespace: str, name: str, uri: str) -> dict[str, Any]:
        """Point a Deployment's template at another model: the deployment controller rolls
        it out (a real rolling update, a new ``pod-template-hash``)."""
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "kserve-container", "env": [{"name": "STORAGE_URI", "value": uri}]}]}}}}
        resource = self._dynamic({"apiVersion": "apps/v1", "kind": "Deployment"})
        patched = resource.patch(body=patch, name=name, namespace=namespace,
                                 content_type="application/strategic-merge-patch+json")
        return _as_dict(patched.to_dict())

    def _dynamic(self, body: Mapping[str, Any]) -> Any:
        """The dynamic client's resource for a body's apiVersion and kind (discovery cached
        in the workdir)."""
        if self._dynamic_client is None:
            self._dynamic_client = DynamicClient(
                self.admin, cache_file=str(self.workdir / "discovery-cache.json"))
        return self._dynamic_client.resources.get(api_version=body["apiVersion"],
                                                  kind=body["kind"])

    def start_route_traffic(self, namespace: str, name: str, rate_rps: float, *,
                            max_seconds: float, concurrency: int = 8,
                            max_requests: int | None = None) -> TrafficGenerator:
        """Requests for model ``name`` sent to the Gateway with the route's hostname: the
        gateway splits them by the route's weights."""
        url = self.gateway_url
        generator = TrafficGenerator(lambda: [(url, 100.0)], rate_rps=rate_rps,
                                     seed=self.config.seed, max_seconds=max_seconds,
                                     max_requests=max_requests, model_name=name,
                                     concurrency=concurrency,
                                     host=self.route_hostname(namespace, name))
        generator.start()
        self.generators.append(generator)
        return generator

    # -- helpers for tests and the demo ---------------------------------------------------

    def controller_api_calls(self) -> set[tuple[str, str, str, int]]:
        """(verb, API group, resource, HTTP status) of every request the controller's
        service account made, from the API server's audit log."""
        return self.api_calls(f"system:serviceaccount:{self.cluster.controller_namespace}:"
                              f"{self.cluster.controller_service_account}")

    def sink_api_calls(self) -> set[tuple[str, str, str, int]]:
        """The same for the prediction sink's service account."""
        namespace, name = sink_identity()
        return self.api_calls(f"system:serviceaccount:{namespace}:{name}")

    def api_calls(self, user: str) -> set[tuple[str, str, str, int]]:
        """(verb, API group, resource, HTTP status) of every request ``user`` made."""
        calls = set()
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            # A watch is long-running: it shows as ResponseStarted until it ends.
            if event.get("stage") not in ("ResponseComplete", "ResponseStarted") or (
                    event.get("user", {}).get("username") != user):
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "") + (f"/{ref['subresource']}"
                                                  if ref.get("subresource") else "")
            calls.add((event["verb"], ref.get("apiGroup", ""), resource,
                       int(event.get("responseStatus", {}).get("code", 0))))
        return calls

    def create_isvc(self, namespace: str, name: str, uri: str, *, policy: str | None = None,
                    annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        annotations = {**({"rollwise.io/policy": policy} if policy else {}),
                       **(annotations or {})}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                                 "storageUri": uri}}}}
        api = kubernetes.client.CustomObjectsApi(self.admin)
        return _as_dict(api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                            body))

    def get_isvc(self, namespace: str, name: str) -> dict[str, Any]:
        api = kubernetes.client.CustomObjectsApi(self.admin)
        return _as_dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                         name))

    def patch_isvc(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        api = kubernetes.client.CustomObjectsApi(self.admin)
        return _as_dict(api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                           name, dict(patch)))

    def start_traffic(self, namespace: str, name: str, rate_rps: float, *,
                      max_seconds: float, concurrency: int = 8,
                      split_refresh_s: float = SPLIT_REFRESH_S) -> TrafficGenerator:
        """Requests to the InferenceService's revisions (Standard mode: its predictor and
        canary Services) as its traffic split says, re-read every ``split_refresh_s``."""
        split = self._split(namespace, name, split_refresh_s)
        generator = TrafficGenerator(split, rate_rps=rate_rps, seed=self.config.seed,
                                     max_seconds=max_seconds, model_name=name,
                                     concurrency=concurrency, split_refresh_s=split_refresh_s)
        generator.start()
        self.generators.append(generator)
        return generator

    def _split(self, namespace: str, name: str, refresh_s: float) -> Split:
        """Knative mode: ``status...traffic``; Standard mode: the HTTPRoute ``name``."""
        isvc = self.get_isvc(namespace, name)
        mode = standard.deployment_mode(
            (isvc.get("metadata") or {}).get("annotations") or {},
            str((isvc.get("status") or {}).get("deploymentMode") or ""), self._kserve_settings)
        if mode != standard.STANDARD:
            return isvc_split(self.admin, namespace, name, self.fleet, refresh_s=refresh_s)
        return route_split(self.admin, namespace, name, self._ready_endpoints,
                           refresh_s=refresh_s)

    def _ready_endpoints(self, namespace: str, service: str) -> list[str]:
        urls = []
        for replica_set in self.kserve.ready_backends(namespace, service):
            endpoint = self.fleet.get(namespace, replica_set)
            if endpoint is not None:
                urls.append(endpoint.url)
        return urls

    def _stop_traffic(self) -> None:
        for generator in self.generators:
            generator.stop()

    def webhook_certificate(self) -> tuple[Path, Path, bytes]:
        """A serving certificate for a webhook on 127.0.0.1: (cert, key, CA bundle),
        made once per world."""
        if self._webhook_pair is None:
            self._webhook_pair = write_serving_pair(self.workdir / "webhook",
                                                    hosts=("127.0.0.1", "localhost"))
        return self._webhook_pair

    def register_webhook(self, base_url: str, ca_bundle: bytes) -> None:
        """Register Rollwise's admission webhooks exactly as deploy/base/webhook.yaml ships
        them (rules, matchConditions, failure policies, selectors), pointing at the
        controller on ``base_url`` instead of its Service."""
        manifest = yaml.safe_load((PROJECT_ROOT / "deploy" / "base" / "webhook.yaml")
                                  .read_text())
        manifest["metadata"] = {"name": "rollwise"}
        for webhook in manifest["webhooks"]:
            path = webhook["clientConfig"]["service"].get("path", "/")
            webhook["clientConfig"] = {"url": f"{base_url}{path}", "caBundle": _b64(ca_bundle)}
        api = kubernetes.client.AdmissionregistrationV1Api(self.admin)
        with contextlib.suppress(ApiException):
            api.delete_mutating_webhook_configuration("rollwise")
        api.create_mutating_webhook_configuration(manifest)


def _audit_args(workdir: Path, log: Path) -> list[str]:
    """Audit every request at Metadata level (who, verb, resource, status): the end-to-end
    suite compares what the controller did with what deploy/rbac grants."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]"
                      "\nrules:\n  - level: Metadata\n")
    return [f"--audit-policy-file={policy}", f"--audit-log-path={log}",
            "--audit-log-format=json", "--audit-log-maxbackup=1"]


def _as_dict(obj: object) -> dict[str, Any]:
    """Custom-object calls return plain JSON objects (typed ``object`` by the client)."""
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(obj).__name__}")
    return obj


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
