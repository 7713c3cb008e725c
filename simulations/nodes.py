"""A simulated node: registers a fake Node, schedules pods onto it, runs them as model
endpoints and reports them Running and Ready, as kubelet and a CNI plugin would.

With kube-controller-manager's real deployment, replicaset and endpointslice controllers
(simulations.kube.controlplane, ``controller_manager=True``) this makes Deployments real:
a Deployment's ReplicaSet creates pods, :class:`NodeAgent` binds each pending pod to its
Node (a scheduler of one node: ``pods/binding``, as kube-scheduler does), gives it a pod IP,
starts one :class:`simulations.endpoints.ModelEndpoint` for it, patches its status to
``Running`` at once (the container started) and ``Ready`` after the model's ready delay
(``None``: never, a broken model whose readiness probe never passes), and, when the pod is
deleted (``deletionTimestamp``), stops the endpoint and removes the pod (a delete with grace
period 0, as kubelet does once the containers are gone). The endpointslice controller then
publishes the ready pods of each Service.

The pod network. EndpointSlice validation rejects loopback addresses
(``ValidateEndpointIP`` in k8s.io/kubernetes pkg/apis/core/validation: "may not be in the
loopback range"), so pods cannot have 127.x addresses. Each node gets a pod CIDR
``10.A.B.0/24`` (A, B random, clear of the service range 10.0.0.0/24) and a pod IP
``10.A.B.C`` is reachable on this machine at ``127.A.B.C`` (the whole 127/8 is loopback on
Linux), the port being the container's own: the job of the CNI plugin here is
:meth:`PodNetwork.local_address`, which the simulated gateway uses to reach an endpoint.
An address is taken only once its listener is bound, so two worlds on one machine that drew
the same CIDR skip each other's addresses; addresses are handed out round-robin, so a
deleted pod's IP is not reused while an EndpointSlice may still show it.

What a pod serves is read from its first container, as the world reads KServe's
``storageUri``: the model key is the env ``STORAGE_URI`` (KServe's variable for custom
containers), else a ``--storage-uri``/``--model-uri`` argument, else the image; the model
name is the env ``MODEL_NAME``, else a ``--model-name``/``--model_name`` argument, else
``model`` (KServe's model server default); the port is the container port named ``http``,
else its first port, else 8080. Scrape targets carry the labels kubernetes_sd relabelling
would give them: ``namespace``, ``pod`` and ``pod_template_hash`` (the pod's
``pod-template-hash`` label, one value per Deployment template), and the endpoint exports
the ``otelhttp`` flavour (simulations.endpoints) plus KServe's model-server histograms.

Not simulated: containers other than the first, probes' own settings (readiness is the
ready delay), restarts, resource accounting, node heartbeats (no node lifecycle controller
runs), volumes.

Pure: the functions above :class:`NodeAgent` (pod reading, the network, the statuses).
I/O: :class:`NodeAgent` (API server, listeners on loopback). Callers: simulations.world,
tests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from simulations.endpoints import Behaviour, EndpointFleet, MetricsFlavour, ModelEndpoint
from simulations.kube.informer import Informer, JsonObject, LevelLoop

__all__ = [
    "DEFAULT_NODE_NAME",
    "NodeAgent",
    "PodNetwork",
    "model_key",
    "model_name",
    "node_manifest",
    "pod_status",
    "serving_port",
    "status_patch",
    "target_labels",
    "workload_name",
]

LOG = logging.getLogger(__name__)

DEFAULT_NODE_NAME = "rollwise-sim-node"
HOST_IP = "127.0.0.1"          # the node's InternalIP: this machine
DEFAULT_SCHEDULER = "default-scheduler"
POD_FLAVOUR: MetricsFlavour = "otelhttp"
DEFAULT_PORT = 8080
_MODEL_KEY_ARGS = ("--storage-uri", "--model-uri")
_MODEL_NAME_ARGS = ("--model-name", "--model_name")
_API_TIMEOUT = (5.0, 15.0)


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class PodNetwork:
    """The pod IPs of one node (``cidr`` within 10.0.0.0/8) and where each is reachable."""

    cidr: ipaddress.IPv4Network

    def __post_init__(self) -> None:
        if not self.cidr.subnet_of(ipaddress.IPv4Network("10.0.0.0/8")):
            raise ValueError(f"pod CIDR {self.cidr} must be within 10.0.0.0/8")

    @classmethod
    def random(cls, rng: random.Random | None = None) -> PodNetwork:
        """``10.A.B.0/24`` with A in 64..254: clear of the service range 10.0.0.0/24."""
        draw = rng or random.Random()
        return cls(ipaddress.IPv4Network(f"10.{draw.randint(64, 254)}.{draw.randint(0, 255)}.0/24"))

    def local_address(self, pod_ip: str) -> str:
        """Where a pod IP of any node is reachable here: 10.A.B.C -> 127.A.B.C."""
        address = ipaddress.IPv4Address(pod_ip)
        if address not in ipaddress.IPv4Network("10.0.0.0/8"):
            raise ValueError(f"{pod_ip} is not a simulated pod IP (10.0.0.0/8)")
        return str(ipaddress.IPv4Address(int(address) - (10 << 24) + (127 << 24)))

    def addresses(self, start: int = 0) -> Iterator[str]:
        """The usable pod IPs, once round from the ``start``-th."""
        hosts = [str(host) for host in self.cidr.hosts()]
        for index in range(len(hosts)):
            yield hosts[(start + index) % len(hosts)]


# --------------------------------------------------------------------------- reading pods


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    first: Mapping[str, Any] = containers[0]
    return first


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for variable in container.get("env") or ():
        if variable.get("name") == name and isinstance(variable.get("value"), str):
            return str(variable["value"])
    return None


def _arg(container: Mapping[str, Any], flags: tuple[str, ...]) -> str | None:
    """The value of the first of ``flags`` in command + args: ``--flag=value`` or
    ``--flag value``."""
    words = [str(word) for word in (*(container.get("command") or ()),
                                    *(container.get("args") or ()))]
    for index, word in enumerate(words):
        flag, equals, value = word.partition("=")
        if flag in flags:
            if equals:
                return value
            if index + 1 < len(words):
                return words[index + 1]
    return None


def model_key(pod: Mapping[str, Any]) -> str:
    """What model the pod serves: env STORAGE_URI, else --storage-uri/--model-uri, else the
    image."""
    container = _container(pod)
    return (_env(container, "STORAGE_URI") or _arg(container, _MODEL_KEY_ARGS)
            or str(container.get("image") or ""))


def model_name(pod: Mapping[str, Any]) -> str:
    """The name in the predict path: env MODEL_NAME, else --model-name, else "model"."""
    container = _container(pod)
    return _env(container, "MODEL_NAME") or _arg(container, _MODEL_NAME_ARGS) or "model"


def serving_port(pod: Mapping[str, Any]) -> int:
    """The container port named "http", else the first one, else 8080."""
    ports = [port for port in _container(pod).get("ports") or ()
             if (port.get("protocol") or "TCP") == "TCP"]
    for port in ports:
        if port.get("name") == "http":
            return int(port["containerPort"])
    return int(ports[0]["containerPort"]) if ports else DEFAULT_PORT


def workload_name(pod: Mapping[str, Any]) -> str:
    """The Deployment a pod belongs to: its ReplicaSet's name without the template hash
    (the deployment controller names ReplicaSets ``<deployment>-<pod-template-hash>``);
    else the pod's own name."""
    metadata = pod.get("metadata") or {}
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    for owner in metadata.get("ownerReferences") or ():
        name = str(owner.get("name") or "")
        if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(
                f"-{template_hash}"):
            return name[: -len(template_hash) - 1]
    return str(metadata.get("name") or "")


def target_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    """Scrape-target labels beyond namespace and pod: the template hash, when the pod has
    one (kubernetes_sd's ``__meta_kubernetes_pod_label_pod_template_hash``, label-mapped)."""
    template_hash = ((pod.get("metadata") or {}).get("labels") or {}).get("pod-template-hash")
    return {"pod_template_hash": str(template_hash)} if template_hash else {}


# --------------------------------------------------------------------------- statuses


def node_manifest(name: str, network: PodNetwork, version: str, now: str) -> JsonObject:
    """A Ready Node with the given pod CIDR, as kubelet registers it."""
    condition = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status (simulated)",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
    capacity = {"cpu": "64", "memory": "256Gi", "pods": "250"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "rollwise.io/simulated": "true"}},
        "spec": {"podCIDR": str(network.cidr), "podCIDRs": [str(network.cidr)]},
        "status": {
            "conditions": [condition],
            "addresses": [{"type": "InternalIP", "address": HOST_IP},
                          {"type": "Hostname", "address": name}],
            "capacity": capacity, "allocatable": capacity,
            "nodeInfo": {"kubeletVersion": f"v{version}", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "simulated://1",
                         "kernelVersion": "", "osImage": "rollwise simulated node",
                         "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": ""},
        },
    }


def _condition_status(status: Mapping[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def pod_status(pod: Mapping[str, Any], *, pod_ip: str, started_at: str, ready: bool,
               now: str) -> JsonObject:
    """The status kubelet reports for a pod whose (first) container is running, ready or
    not yet; conditions that keep their status keep their lastTransitionTime."""
    old = pod.get("status") or {}
    container = _container(pod)
    wanted = {"PodReadyToStartContainers": "True", "Initialized": "True",
              "ContainersReady": str(ready), "Ready": str(ready)}
    conditions = []
    for kind, value in wanted.items():
        previous: Mapping[str, Any] = next(
            (c for c in old.get("conditions") or () if c.get("type") == kind), {})
        since = previous.get("lastTransitionTime") if previous.get("status") == value else now
        conditions.append({"type": kind, "status": value, "lastTransitionTime": since or now,
                           **({} if ready or kind not in ("Ready", "ContainersReady") else {
                               "reason": "ContainersNotReady",
                               "message": f"containers with unready status: "
                                          f"[{container.get('name')}]"})})
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    return {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": old.get("startTime") or started_at,
        "containerStatuses": [{
            "name": container.get("name"), "image": container.get("image") or "",
            "imageID": "", "containerID": f"simulated://{uid}",
            "ready": ready, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": started_at}},
        }],
    }


def status_patch(pod: Mapping[str, Any], desired: Mapping[str, Any]) -> JsonObject | None:
    """A strategic-merge patch of the status when phase, pod IP or readiness differ from
    ``desired`` (the transition times alone never cause a write); None when in step."""
    status = pod.get("status") or {}
    current = (status.get("phase"), status.get("podIP"), _condition_status(status, "Ready"),
               len(status.get("containerStatuses") or ()))
    target = (desired["phase"], desired["podIP"], _condition_status(desired, "Ready"),
              len(desired["containerStatuses"]))
    return None if current == target else {"status": dict(desired)}


def _is_pending_unscheduled(pod: Mapping[str, Any]) -> bool:
    spec, metadata = pod.get("spec") or {}, pod.get("metadata") or {}
    return (not spec.get("nodeName") and not metadata.get("deletionTimestamp")
            and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
            and (pod.get("status") or {}).get("phase") in (None, "", "Pending"))


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- the agent


@dataclass
class _Running:
    """A pod whose container this node started."""

    namespace: str
    name: str
    workload: str
    model_key: str
    pod_ip: str
    endpoint: ModelEndpoint
    started_at: str
    ready_at: float | None  # monotonic; None: never


class NodeAgent:
    """One simulated node for the pods of every namespace: ``start()``, then ``stop()``."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        fleet: EndpointFleet,
        *,
        network: PodNetwork | None = None,
        node_name: str = DEFAULT_NODE_NAME,
        behaviour: Callable[[str], Behaviour] = lambda key: Behaviour(),
        ready_delay: Callable[[str], float | None] = lambda key: 1.0,
        on_started: Callable[[str, str, str], None] | None = None,
        schedule: bool = True,
        kubernetes_version: str = "1.35.4",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``behaviour`` and ``ready_delay`` are looked up by model key (None: never
        ready); ``on_started(model_key, namespace, pod)`` is told of every endpoint
        started; ``schedule`` binds every pending pod without a node to this one."""
        self.node_name = node_name
        self.network = network or PodNetwork.random()
        self._api = kubernetes.client.CoreV1Api(api_client)
        self._fleet = fleet
        self._behaviour = behaviour
        self._ready_delay = ready_delay
        self._on_started = on_started
        self._schedule = schedule
        self._version = kubernetes_version
        self._clock = clock
        self._wall_clock = wall_clock
        self._running: dict[str, _Running] = {}   # by pod uid
        self._lock = threading.Lock()
        self._cursor = 0
        self._loop = LevelLoop(f"node-{node_name}", self.reconcile, clock=clock)
        self._pods = Informer(f"pods-{node_name}", self._api.list_pod_for_all_namespaces,
                              on_change=self._loop.kick)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Register the Node, then watch pods; returns once the first list is in."""
        self._register_node()
        self._loop.start()
        self._pods.start()
        if not self._pods.synced.wait(timeout):
            raise TimeoutError(f"node {self.node_name}: pods not listed within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop watching, then stop every endpoint this node started (pods stay as they
        are in the API server, as when a kubelet goes away)."""
        self._pods.stop()
        self._loop.stop()
        with self._lock:
            running, self._running = list(self._running.values()), {}
        for pod in running:
            self._remove_endpoint(pod)

    def __enter__(self) -> NodeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> dict[tuple[str, str], str]:
        """Pod IP by (namespace, pod name) of the pods running here now."""
        with self._lock:
            return {(pod.namespace, pod.name): pod.pod_ip for pod in self._running.values()}

    # -- one pass -------------------------------------------------------------------------

    def reconcile(self) -> float | None:
        """Bring every pod of this node in step; seconds until a pod is due to be ready."""
        now = self._clock()
        stamp = _rfc3339(self._wall_clock())
        seen: set[str] = set()
        wake: float | None = None
        for pod in self._pods.items():
            metadata, spec = pod["metadata"], pod.get("spec") or {}
            if self._schedule and _is_pending_unscheduled(pod):
                self._bind(pod)
                continue
            if spec.get("nodeName") != self.node_name:
                continue
            uid = str(metadata["uid"])
            seen.add(uid)
            if metadata.get("deletionTimestamp"):
                self._terminate(pod)
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            running = self._running.get(uid) or self._start_container(pod, stamp, now)
            if running is None:
                continue
            ready = running.ready_at is not None and now >= running.ready_at
            if running.ready_at is not None and not ready:
                due = running.ready_at - now
                wake = due if wake is None else min(wake, due)
            desired = pod_status(pod, pod_ip=running.pod_ip, started_at=running.started_at,
                                 ready=ready, now=stamp)
            patch = status_patch(pod, desired)
            if patch is not None:
                self._patch_status(pod, patch)
        for uid in set(self._running) - seen:   # deleted at once (grace 0) by someone else
            with self._lock:
                gone = self._running.pop(uid)
            self._remove_endpoint(gone)
        return wake

    def _start_container(self, pod: JsonObject, stamp: str, now: float) -> _Running | None:
        """Take a pod IP and start the pod's endpoint on its loopback twin."""
        metadata = pod["metadata"]
        namespace, name = str(metadata["namespace"]), str(metadata["name"])
        key = model_key(pod)
        port = serving_port(pod)
        for pod_ip in self.network.addresses(self._cursor):
            self._cursor += 1
            if pod_ip in {running.pod_ip for running in self._running.values()}:
                continue
            try:
                endpoint = self._fleet.add(
                    namespace, workload_name(pod), name, self._behaviour(key),
                    model_name=model_name(pod), pod_name=name,
                    host=self.network.local_address(pod_ip), port=port, flavour=POD_FLAVOUR,
                    target_labels=target_labels(pod))
            except OSError as error:   # taken by another world on this machine
                LOG.debug("node %s: %s:%d is taken (%s)", self.node_name, pod_ip, port, error)
                continue
            delay = self._ready_delay(key)
            running = _Running(namespace, name, workload_name(pod), key, pod_ip, endpoint,
                               stamp, None if delay is None else now + delay)
            with self._lock:
                self._running[str(metadata["uid"])] = running
            if self._on_started is not None:
                self._on_started(key, namespace, name)
            return running
        LOG.error("node %s: no free pod IP in %s for %s/%s", self.node_name,
                  self.network.cidr, namespace, name)
        return None

    def _remove_endpoint(self, running: _Running) -> None:
        with contextlib.suppress(KeyError):   # the fleet was closed first
            self._fleet.remove(running.namespace, running.workload, running.name)

    # -- API calls --------------------------------------------------------------------------

    def _register_node(self) -> None:
        body = node_manifest(self.node_name, self.network, self._version,
                             _rfc3339(self._wall_clock()))
        try:
            # The client sends a JSON dict as it is; the typed model would drop nothing but
            # be three times as long.
            self._api.create_node(cast(Any, body), _request_timeout=_API_TIMEOUT)
        except ApiException as error:
            if error.status != 409:
                raise
            # Left by an earlier agent: take it over with this network.
            self._api.patch_node(self.node_name, {"spec": body["spec"]},
                                 _request_timeout=_API_TIMEOUT)
            self._api.patch_node_status(self.node_name, {"status": body["status"]},
                                        _request_timeout=_API_TIMEOUT)

    def _bind(self, pod: JsonObject) -> None:
        metadata = pod["metadata"]
        binding = kubernetes.client.V1Binding(
            metadata=kubernetes.client.V1ObjectMeta(name=metadata["name"], uid=metadata["uid"]),
            target=kubernetes.client.V1ObjectReference(api_version="v1", kind="Node",
                                                       name=self.node_name))
        try:
            # The generated client cannot read the answer (a Status): keep it raw.
            self._api.create_namespaced_pod_binding(
                metadata["name"], metadata["namespace"], binding, _preload_content=False,
                _request_timeout=_API_TIMEOUT)
        except ApiException as error:
            if error.status not in (404, 409):   # gone, or bound meanwhile
                raise

    def _patch_status(self, pod: JsonObject, patch: JsonObject) -> None:
        metadata = pod["metadata"]
        try:
            self._api.patch_namespaced_pod_status(
                metadata["name"], metadata["namespace"], patch, _request_timeout=_API_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise

    def _terminate(self, pod: JsonObject) -> None:
        """Stop the container, then remove the pod for good (kubelet's final delete)."""
        metadata = pod["metadata"]
        with self._lock:
            running = self._running.pop(str(metadata["uid"]), None)
        if running is not None:
            self._remove_endpoint(running)
        options = kubernetes.client.V1DeleteOptions(
            grace_period_seconds=0,
            preconditions=kubernetes.client.V1Preconditions(uid=metadata["uid"]))
        try:
            self._api.delete_namespaced_pod(metadata["name"], metadata["namespace"],
                                            body=options, _request_timeout=_API_TIMEOUT)
        except ApiException as error:
            if error.status not in (404, 409):   # gone, or a new pod of the same name
                raise
