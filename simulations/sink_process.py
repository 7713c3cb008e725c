"""Run the real prediction sink (``rollwise prediction-sink``) as its own process against the
world, configured as in a cluster: its own ServiceAccount with exactly the shipped RBAC
(deploy/base/sink/serviceaccount.yaml and rbac.yaml, applied by the admin), a kubeconfig
holding a token the API server issued for that account (TokenRequest), a listen address.
Used by the world's ``prediction_sink`` mode. I/O.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import TracebackType

import kubernetes.client
import requests

from simulations.kube.build import PROJECT_ROOT
from simulations.kube.clients import write_kubeconfig
from simulations.kube.controlplane import Cluster
from simulations.kube.manifests import Manifests, load_manifests
from simulations.kube.processes import ManagedProcess

SINK_DIR = PROJECT_ROOT / "deploy" / "base" / "sink"
_TOKEN_SECONDS = 24 * 3600


def sink_manifests() -> list[Path]:
    """The sink's identity and RBAC, as shipped."""
    return [SINK_DIR / "serviceaccount.yaml", SINK_DIR / "rbac.yaml"]


def sink_identity() -> tuple[str, str]:
    """(namespace, name) of the sink's ServiceAccount in the shipped manifests."""
    import yaml

    account = yaml.safe_load((SINK_DIR / "serviceaccount.yaml").read_text())
    return account["metadata"]["namespace"], account["metadata"]["name"]


def sink_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """Install the sink's account and RBAC; a kubeconfig with a token for that account."""
    namespace, name = sink_identity()
    with cluster.admin_api_client() as api:
        Manifests(api, cluster.workdir / "discovery-cache.json").apply_all(
            load_manifests(sink_manifests()))
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(audiences=[],
                                                      expiration_seconds=_TOKEN_SECONDS))
        status = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
            name, namespace, request).status
    token = getattr(status, "token", None)
    if not isinstance(token, str) or not token:
        raise RuntimeError(f"the API server issued no token for {namespace}/{name}")
    return write_kubeconfig(path, server=cluster.server, ca_cert=cluster.ca_cert,
                            user=f"system:serviceaccount:{namespace}:{name}", token=token,
                            namespace=namespace)


class SinkProcess:
    """``rollwise prediction-sink`` in a subprocess, ready when ``/readyz`` answers."""

    def __init__(self, kubeconfig: Path, log_file: Path, *,
                 settings: dict[str, str] | None = None) -> None:
        # controller_process imports the world, which imports this module
        from simulations.controller_process import free_port

        self.kubeconfig, self.log_file = kubeconfig, log_file
        self.port = free_port()
        self.settings = {
            "ROLLWISE_SINK_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            "ROLLWISE_SINK_KUBERNETES__KUBECONFIG": str(kubeconfig),
            "ROLLWISE_SINK_LOG_FORMAT": "json",
            # The world creates a revision's pod before its endpoint serves: a pod unknown
            # for a moment is asked again soon.
            "ROLLWISE_SINK_NEGATIVE_SECONDS": "2",
            **(settings or {})}
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    def start(self, wait_ready: float = 30.0) -> SinkProcess:
        # ManagedProcess inherits the environment; `env` adds the sink's settings.
        argv = ["env", *(f"{k}={v}" for k, v in self.settings.items()),
                sys.executable, "-m", "controller", "prediction-sink"]
        self.process = ManagedProcess("prediction-sink", argv, self.log_file,
                                      cwd=PROJECT_ROOT)
        deadline = time.monotonic() + wait_ready
        while time.monotonic() < deadline:
            if self.process.exit_code() is not None:
                raise RuntimeError(f"prediction sink exited with {self.process.exit_code()}:"
                                   f"\n{self.tail()}")
            try:
                if requests.get(f"{self.url}readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("prediction sink not ready in time:\n" + self.tail())

    def metrics(self) -> str:
        return requests.get(f"{self.url}metrics", timeout=5).text

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def warnings(self) -> list[dict[str, object]]:
        """The sink's warning lines (JSON logs)."""
        out = []
        for line in self.tail(10_000).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") == "warning":
                out.append(record)
        return out

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
