"""Run the real controller (``rollwise run``) as a separate process against the world,
configured exactly as in a cluster: a kubeconfig (the controller's service account), a
Prometheus URL, a policy directory. Used by the end-to-end tests and the demo. I/O.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import requests

from simulations.world import World


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ControllerProcess:
    """``rollwise run`` in a subprocess; ``kill()`` is a real SIGKILL."""

    def __init__(self, world: World, policy_dir: Path, log_file: Path, *,
                 webhook: bool = True, env: Mapping[str, str] | None = None,
                 identity: str = "a") -> None:
        self.world = world
        self.policy_dir = policy_dir
        self.log_file = log_file
        self.port = free_port()
        self.slack_port = free_port()
        self.webhook_port = free_port() if webhook else None
        self._webhook = webhook
        self._extra = dict(env or {})
        self.identity = identity
        # Lineage (ML Metadata on SQLite) beside the log, never in the caller's directory.
        self.mlmd_path = log_file.with_suffix(".mlmd.sqlite")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Health, readiness and /metrics."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def slack_url(self) -> str:
        """Slack interactivity (its own listener, as in a pod)."""
        return f"http://127.0.0.1:{self.slack_port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLWISE_")}
        env.update({
            "ROLLWISE_KUBERNETES__KUBECONFIG": str(self.world.cluster.controller_kubeconfig),
            "ROLLWISE_PROMETHEUS__URL": self.world.prometheus.url,
            "ROLLWISE_POLICY_DIR": str(self.policy_dir),
            "ROLLWISE_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            "ROLLWISE_SLACK__LISTEN_ADDRESS": f"127.0.0.1:{self.slack_port}",
            "ROLLWISE_LEADER_ELECTION__LEASE_NAMESPACE": self.world.cluster.controller_namespace,
            # The seal key: the shipped default, a Secret in the controller's namespace
            # that the first replica creates (deploy/rbac grants exactly that).
            "ROLLWISE_SEAL__SECRET_NAMESPACE": self.world.cluster.controller_namespace,
            "ROLLWISE_LEADER_ELECTION__LEASE_DURATION_SECONDS": "6",
            "ROLLWISE_LEADER_ELECTION__RENEW_DEADLINE_SECONDS": "4",
            "ROLLWISE_LEADER_ELECTION__RETRY_PERIOD_SECONDS": "1",
            "ROLLWISE_TICK_SECONDS": "1",
            "ROLLWISE_MLMD__SQLITE_PATH": str(self.mlmd_path),
            "ROLLWISE_LOG_FORMAT": "json",
            "HOSTNAME": f"rollwise-{self.identity}",
        })
        if self._webhook and self.webhook_port is not None:
            cert, key, _ = self.world.webhook_certificate()
            env.update({"ROLLWISE_WEBHOOK__LISTEN_ADDRESS": f"127.0.0.1:{self.webhook_port}",
                        "ROLLWISE_WEBHOOK__CERT_FILE": str(cert),
                        "ROLLWISE_WEBHOOK__KEY_FILE": str(key)})
        env.update(self._extra)
        return env

    def start(self, wait_ready: float = 30.0) -> ControllerProcess:
        if self._webhook and self.webhook_port is not None:
            _, _, ca = self.world.webhook_certificate()
            self.world.register_webhook(f"https://127.0.0.1:{self.webhook_port}", ca)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "controller", "run"],
                                        env=self.environment(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + wait_ready
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"controller exited with {self.process.returncode}:\n"
                                   + self.tail())
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("controller not ready in time:\n" + self.tail())

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=5).text

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a node failure would do."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
