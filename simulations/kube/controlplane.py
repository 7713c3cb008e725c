"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and demos.

`with ControlPlane(...) as cluster:` starts etcd and kube-apiserver from the
binaries simulations.kube.build caches, on free 127.0.0.1 ports, with freshly
generated certificates, static-token authentication (an admin in
system:masters and the controller as its ServiceAccount user), RBAC
authorization and the admission webhooks enabled. It then installs the real
KServe InferenceService CRD and the Gateway API CRDs (crds/), the controller's
Namespace and ServiceAccount and
the given manifests, and writes admin and controller kubeconfigs. On exit, also
after an exception or Ctrl-C, it stops both servers and removes its workdir.
For fault tests, `stop_apiserver()`/`start_apiserver()` and `pause_apiserver()`/
`resume_apiserver()` take kube-apiserver away and back on the same port while etcd keeps
the data.
By default this is what controller-runtime's envtest does, without nodes, pods or
controllers: objects are stored and validated, nothing reconciles them. With
`controller_manager=True` a third process, the real kube-controller-manager, runs
the controllers that make Deployments real (`CONTROLLERS`: deployment, replicaset,
endpointslice, the garbage collector for ownerReferences, and the serviceaccount
controller, whose `default` ServiceAccount the ServiceAccount admission plugin
requires before any pod is created). It authenticates as
`system:kube-controller-manager` with its own kubeconfig and, as kubeadm runs it,
gives each controller its own ServiceAccount credentials (TokenRequest), so the
bootstrap RBAC roles `system:controller:*` apply. Pods still need a node agent
(simulations.nodes): there is no kubelet and no scheduler.

I/O: starts processes, listens on loopback ports, writes a temporary workdir.
Callers: simulations.kube.pytest_plugin, `rollwise sim up`, tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import kubernetes.client

from simulations.kube.build import PROJECT_ROOT, Binaries, BuildError, ensure_binaries
from simulations.kube.certs import ControlPlanePki, write_control_plane_pki
from simulations.kube.clients import (
    api_client_from_kubeconfig,
    update_with_retry,
    write_kubeconfig,
)
from simulations.kube.crds import GATEWAY_API_CRDS, KSERVE_CRD, shared_reference_dir
from simulations.kube.manifests import ManifestError, ManifestObject, Manifests, load_manifests
from simulations.kube.processes import STOP_GRACE_S, ManagedProcess

__all__ = [
    "DEFAULT_KSERVE_CRD",
    "KSERVE_CRD_ENV",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "update_with_retry",
]

KSERVE_CRD_ENV = "ROLLWISE_KSERVE_CRD"
# KServe's real CRD, kept in the repository (crds/README.md: source, commit, sha256) so
# that a fresh machine has it; a test keeps it identical to shared/reference when present.
DEFAULT_KSERVE_CRD = KSERVE_CRD
SHARED_REFERENCE_CRD = (
    (shared_reference_dir() or PROJECT_ROOT.parent / "shared" / "reference") / "kserve"
    / "serving.kserve.io_inferenceservices.yaml"
)
KSERVE_CRD_NAME = "inferenceservices.serving.kserve.io"

ETCD_READY_TIMEOUT_S = 30.0
CONTROLLER_MANAGER_READY_TIMEOUT_S = 60.0
APISERVER_READY_TIMEOUT_S = 90.0  # a cold start on a busy 2-core machine
CRD_ESTABLISHED_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0
START_ATTEMPTS = 3  # a port taken between picking and binding costs one attempt
LOG_TAIL_LINES = 30
_PORT_TAKEN = "address already in use"
_LOOPBACK = "127.0.0.1"
_APISERVER = "kube-apiserver"
_CONTROLLER_MANAGER = "kube-controller-manager"
_CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
# kube-controller-manager's names for them (cmd/kube-controller-manager/names).
CONTROLLERS: tuple[str, ...] = (
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
)
_TOKEN_FILE = "tokens.csv"  # admin first: token,user,uid,"groups"


class ControlPlaneError(Exception):
    """The control plane could not start or be set up; the message shows why."""


class _PortTaken(ControlPlaneError):
    """A server lost the race for a port; starting again on new ports fixes it."""


@dataclass(frozen=True)
class Cluster:
    """How to reach a running control plane, as admin and as the controller."""

    server: str  # https://127.0.0.1:<port>
    admin_kubeconfig: Path  # user in system:masters
    controller_kubeconfig: Path  # system:serviceaccount:<ns>:<sa>
    controller_namespace: str
    controller_service_account: str
    ca_cert: Path
    workdir: Path

    def admin_api_client(self) -> kubernetes.client.ApiClient:
        """A new client acting as cluster admin (calls time out by default)."""
        return api_client_from_kubeconfig(self.admin_kubeconfig)

    def controller_api_client(self) -> kubernetes.client.ApiClient:
        """A new client with exactly the controller ServiceAccount's permissions."""
        return api_client_from_kubeconfig(self.controller_kubeconfig)


@dataclass(frozen=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int


def _free_loopback_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now, all distinct (held open together while picked)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind((_LOOPBACK, 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def _resolve_kserve_crd(explicit: Path | None) -> Path:
    """The argument, else $ROLLWISE_KSERVE_CRD, else the copy in crds/; must exist."""
    from_env = os.environ.get(KSERVE_CRD_ENV)
    path = explicit or (Path(from_env) if from_env else DEFAULT_KSERVE_CRD)
    if not path.is_file():
        raise ControlPlaneError(
            f"KServe InferenceService CRD not found at {path}: pass kserve_crd= or set "
            f"{KSERVE_CRD_ENV} to serving.kserve.io_inferenceservices.yaml from a KServe release"
        )
    return path


class ControlPlane:
    """Context manager running etcd and kube-apiserver; `__enter__` returns the Cluster."""

    def __init__(
        self,
        *,
        manifests: Sequence[Path] = (),
        kserve_crd: Path | None = None,
        controller_namespace: str = "rollwise-system",
        controller_service_account: str = "rollwise-controller",
        binaries: Binaries | None = None,
        workdir: Path | None = None,
        apiserver_args: Sequence[str] = (),
        controller_manager: bool = False,
    ) -> None:
        """`workdir`, when given, is kept after exit (logs included); otherwise a temp dir
        is made and removed. `apiserver_args` are extra kube-apiserver flags.
        `controller_manager` also runs kube-controller-manager with `CONTROLLERS`."""
        self._manifests = tuple(manifests)
        self._kserve_crd = kserve_crd
        self._namespace = controller_namespace
        self._service_account = controller_service_account
        self._binaries = binaries
        self._requested_workdir = workdir
        self._apiserver_args = tuple(apiserver_args)
        self._controller_manager = controller_manager
        self._workdir: Path | None = None
        self._processes: dict[str, ManagedProcess] = {}
        self._pids: dict[str, int] = {}
        self._argv: dict[str, tuple[str, ...]] = {}  # to start a stopped server again
        self._cluster: Cluster | None = None
        self.startup_seconds: float | None = None

    # -- public surface -------------------------------------------------------

    @property
    def pids(self) -> Mapping[str, int]:
        """Process ids by server name ("etcd", "kube-apiserver", "kube-controller-manager"),
        also after exit."""
        return dict(self._pids)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise ControlPlaneError("the control plane is not running")
        return self._cluster

    def log_path(self, name: str) -> Path:
        """Where the server `name` writes its log (gone after exit unless workdir was given)."""
        return self._require_workdir() / f"{name}.log"

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Start the servers and install the CRD, namespace, ServiceAccount and manifests;
        then kube-controller-manager, if asked for.

        On failure the caller must call `stop()` (the context manager does).
        """
        if self._cluster is not None or self._processes:
            raise ControlPlaneError("this ControlPlane is already started")
        started = time.monotonic()
        crd = _resolve_kserve_crd(self._kserve_crd)
        try:
            # Read before starting anything, so a bad file costs no server start.
            objects = load_manifests([crd, *GATEWAY_API_CRDS, *self._manifests])
            binaries = self._binaries or ensure_binaries()
        except (ManifestError, BuildError) as error:
            raise ControlPlaneError(str(error)) from error
        workdir = self._make_workdir()
        # Also stop (and remove the workdir) when the interpreter exits without
        # unwinding this object, e.g. pytest interrupted between tests.
        atexit.register(self.stop)
        pki = write_control_plane_pki(workdir / "pki")
        admin_token, controller_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        manager_token = secrets.token_urlsafe(32)
        token_file = self._write_token_file(workdir / _TOKEN_FILE, admin_token, controller_token,
                                            manager_token)
        server = self._start_servers(binaries, pki, token_file, admin_token)
        cluster = Cluster(
            server=server,
            admin_kubeconfig=write_kubeconfig(
                workdir / "admin.kubeconfig", server=server, ca_cert=pki.ca_cert,
                user="rollwise-admin", token=admin_token, namespace="default",
            ),
            controller_kubeconfig=write_kubeconfig(
                workdir / "controller.kubeconfig", server=server, ca_cert=pki.ca_cert,
                user=self._controller_user, token=controller_token, namespace=self._namespace,
            ),
            controller_namespace=self._namespace,
            controller_service_account=self._service_account,
            ca_cert=pki.ca_cert,
            workdir=workdir,
        )
        self._install(cluster, objects)
        if self._controller_manager:
            kubeconfig = write_kubeconfig(
                workdir / "controller-manager.kubeconfig", server=server, ca_cert=pki.ca_cert,
                user=_CONTROLLER_MANAGER_USER, token=manager_token, namespace="kube-system",
            )
            self._start_controller_manager(binaries, pki, kubeconfig)
        self._cluster = cluster
        self.startup_seconds = time.monotonic() - started
        return cluster

    def stop(self) -> None:
        """Stop the apiserver, then etcd, then remove the workdir we made; idempotent."""
        self._cluster = None
        try:
            self._stop_processes()
        finally:
            if self._workdir is not None and self._requested_workdir is None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
            atexit.unregister(self.stop)

    # -- API-server outages, for fault tests --------------------------------------

    def stop_apiserver(self) -> None:
        """An API-server outage: stop kube-apiserver (SIGTERM, then SIGKILL) while etcd
        keeps running with the data. Clients get "connection refused" on the same port
        until ``start_apiserver()``."""
        process = self._processes.pop(_APISERVER, None)
        if process is None:
            raise ControlPlaneError("kube-apiserver is not running: nothing to stop")
        # A paused server cannot handle SIGTERM; let it drain instead of waiting for SIGKILL.
        self._signal_apiserver_group(process, signal.SIGCONT)
        process.stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again exactly as before (same port, certificates, tokens,
        etcd, audit log, appended to) and wait until it is ready."""
        if _APISERVER in self._processes:
            raise ControlPlaneError("kube-apiserver is already running")
        cluster, argv = self.cluster, self._argv.get(_APISERVER)
        if argv is None:
            raise ControlPlaneError("kube-apiserver was never started: call start() first")
        process = self._spawn(_APISERVER, argv)
        admin_token = (cluster.workdir / _TOKEN_FILE).read_text().split(",", 1)[0]
        self._wait_ready(process, f"{cluster.server}/readyz", APISERVER_READY_TIMEOUT_S,
                         ssl_context=ssl.create_default_context(cafile=str(cluster.ca_cert)),
                         token=admin_token)

    def pause_apiserver(self) -> None:
        """A hung API server: SIGSTOP. The kernel still accepts connections on its port,
        nothing answers them until ``resume_apiserver()`` (SIGCONT)."""
        self._signal_apiserver_group(self._running_apiserver(), signal.SIGSTOP)

    def resume_apiserver(self) -> None:
        self._signal_apiserver_group(self._running_apiserver(), signal.SIGCONT)

    def _running_apiserver(self) -> ManagedProcess:
        process = self._processes.get(_APISERVER)
        if process is None or process.exit_code() is not None:
            raise ControlPlaneError("kube-apiserver is not running")
        return process

    @staticmethod
    def _signal_apiserver_group(process: ManagedProcess, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)   # its own session: the group is the server

    # -- steps ----------------------------------------------------------------

    @property
    def _controller_user(self) -> str:
        return f"system:serviceaccount:{self._namespace}:{self._service_account}"

    def _require_workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("the control plane has no workdir (not started)")
        return self._workdir

    def _make_workdir(self) -> Path:
        if self._requested_workdir is not None:
            self._requested_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._requested_workdir.resolve()
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="rollwise-kube-"))
        return self._workdir

    def _write_token_file(self, path: Path, admin_token: str, controller_token: str,
                          manager_token: str) -> Path:
        # kube-apiserver's static token file: token,user,uid,"group1,group2".
        groups = (
            "system:serviceaccounts",
            f"system:serviceaccounts:{self._namespace}",
            "system:authenticated",
        )
        rows = [
            f'{admin_token},rollwise-admin,rollwise-admin,"system:masters"',
            f'{controller_token},{self._controller_user},{self._controller_user},'
            f'"{",".join(groups)}"',
            # Bound to its bootstrap ClusterRole system:kube-controller-manager.
            f"{manager_token},{_CONTROLLER_MANAGER_USER},{_CONTROLLER_MANAGER_USER}",
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(rows) + "\n")
        return path

    def _start_servers(self, binaries: Binaries, pki: ControlPlanePki, token_file: Path,
                       admin_token: str) -> str:
        """Start etcd and kube-apiserver until both are ready; new ports if one was taken."""
        for attempt in range(1, START_ATTEMPTS + 1):
            etcd_client, etcd_peer, apiserver = _free_loopback_ports(3)
            ports = _Ports(etcd_client, etcd_peer, apiserver)
            try:
                self._start_etcd(binaries, ports)
                self._start_apiserver(binaries, ports, pki, token_file, admin_token)
                return f"https://{_LOOPBACK}:{ports.apiserver}"
            except _PortTaken:
                self._stop_processes()
                if attempt == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _stop_processes(self) -> None:
        # Newest first: the apiserver must not outlive the etcd it writes to.
        etcd = self._processes.get("etcd")
        etcd_gone = etcd is not None and etcd.exit_code() is not None
        for name in reversed(list(self._processes)):
            # Without its etcd the apiserver never finishes draining; don't wait for it.
            grace = 0.5 if etcd_gone else STOP_GRACE_S
            self._processes.pop(name).stop(grace=grace)

    def _spawn(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        log_path = self.log_path(name)
        try:
            process = ManagedProcess(name, argv, log_path, cwd=self._require_workdir())
        except OSError as error:
            raise ControlPlaneError(f"cannot start {name} ({argv[0]}): {error}") from error
        self._processes[name] = process
        self._pids[name] = process.pid
        self._argv[name] = tuple(argv)
        return process

    def _start_etcd(self, binaries: Binaries, ports: _Ports) -> None:
        workdir = self._require_workdir()
        data_dir = workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        client_url = f"http://{_LOOPBACK}:{ports.etcd_client}"
        peer_url = f"http://{_LOOPBACK}:{ports.etcd_peer}"
        process = self._spawn("etcd", [
            str(binaries.etcd),
            "--name=rollwise",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=rollwise={peer_url}",
            "--initial-cluster-state=new",
            # Throwaway data: skip fsync, which dominates etcd latency on CI disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])
        self._wait_ready(process, f"{client_url}/health", ETCD_READY_TIMEOUT_S,
                         ssl_context=None, token=None)

    def _start_apiserver(self, binaries: Binaries, ports: _Ports, pki: ControlPlanePki,
                         token_file: Path, admin_token: str) -> None:
        server = f"https://{_LOOPBACK}:{ports.apiserver}"
        process = self._spawn("kube-apiserver", [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://{_LOOPBACK}:{ports.etcd_client}",
            f"--bind-address={_LOOPBACK}",
            f"--advertise-address={_LOOPBACK}",
            f"--secure-port={ports.apiserver}",
            f"--cert-dir={self._require_workdir() / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--token-auth-file={token_file}",
            "--anonymous-auth=false",
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # No nodes and no kube-proxy: publishing 127.0.0.1 as the endpoints of
            # the `kubernetes` Service would fail validation on every resync.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
            *self._apiserver_args,
        ])
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._wait_ready(process, f"{server}/readyz", APISERVER_READY_TIMEOUT_S,
                         ssl_context=context, token=admin_token)

    def _start_controller_manager(self, binaries: Binaries, pki: ControlPlanePki,
                                  kubeconfig: Path) -> None:
        """kube-controller-manager with `CONTROLLERS` only, serving /healthz on loopback;
        on a port lost to a race it starts again on another one."""
        for attempt in range(1, START_ATTEMPTS + 1):
            (port,) = _free_loopback_ports(1)
            process = self._spawn(_CONTROLLER_MANAGER, [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",   # the only instance
                f"--bind-address={_LOOPBACK}",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                "--profiling=false",
                "--v=1",
            ])
            context = ssl.create_default_context(cafile=str(pki.ca_cert))
            try:
                self._wait_ready(process, f"https://{_LOOPBACK}:{port}/healthz",
                                 CONTROLLER_MANAGER_READY_TIMEOUT_S, ssl_context=context,
                                 token=None)
                return
            except _PortTaken:
                self._processes.pop(_CONTROLLER_MANAGER).stop()
                if attempt == START_ATTEMPTS:
                    raise

    def _wait_ready(self, process: ManagedProcess, url: str, timeout: float, *,
                    ssl_context: ssl.SSLContext | None, token: str | None) -> None:
        """Poll `url` until it answers 200, the process exits, or `timeout` passes."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + timeout
        last_answer = "no answer yet"
        while True:
            exit_code = process.exit_code()
            if exit_code is not None:
                tail = process.log_tail(LOG_TAIL_LINES)
                error_type = _PortTaken if _PORT_TAKEN in tail else ControlPlaneError
                raise error_type(
                    f"{process.name} exited with status {exit_code} while starting; "
                    f"last lines of {process.log_path.name}:\n{tail}"
                )
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S,
                                            context=ssl_context) as response:
                    if response.status == 200:
                        return
                    last_answer = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                last_answer = f"HTTP {error.code}: {error.read(2000).decode(errors='replace')}"
            except (OSError, ssl.SSLError) as error:
                last_answer = str(error)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{process.name} not ready within {timeout:.0f}s at {url} "
                    f"({last_answer}); last lines of {process.log_path.name}:\n"
                    f"{process.log_tail(LOG_TAIL_LINES)}"
                )
            time.sleep(0.1)

    def _install(self, cluster: Cluster, objects: Sequence[ManifestObject]) -> None:
        """The CRD first (and Established), then the controller's identity, then the rest."""
        crds = [item for item in objects if item.body["kind"] == "CustomResourceDefinition"]
        rest = [item for item in objects if item.body["kind"] != "CustomResourceDefinition"]
        identity = [
            ManifestObject(Path("<controlplane>"), {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self._namespace},
            }),
            ManifestObject(Path("<controlplane>"), {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": self._service_account, "namespace": self._namespace},
            }),
        ]
        with cluster.admin_api_client() as api:
            applier = Manifests(api, cluster.workdir / "discovery-cache.json")
            try:
                applier.apply_all(crds)
                for item in crds:
                    applier.wait_for_crd_established(item.body["metadata"]["name"],
                                                     CRD_ESTABLISHED_TIMEOUT_S)
                applier.apply_all(identity)
                applier.apply_all(rest)
            except ManifestError as error:
                raise ControlPlaneError(str(error)) from error
