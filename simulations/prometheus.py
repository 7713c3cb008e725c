"""A real, private Prometheus server that scrapes the simulated endpoints through file_sd.

Purpose
-------
Rollwise's canary analysis runs PromQL against Prometheus' HTTP API. Tests and
``rollwise sim`` run a genuine ``prometheus`` binary (Debian's package, 2.42 here) so
that queries, staleness, counter resets and histogram maths are Prometheus' own.

I/O
---
* ``ensure_prometheus()`` finds the binary (``/usr/bin/prometheus`` or ``PATH``); as root
  it installs Debian's ``prometheus`` package if missing; otherwise it raises
  ``PrometheusNotInstalled`` saying what to install. Debian's package ships a system
  service and ``/etc/prometheus/prometheus.yml``: neither is touched or used.
* ``PrometheusServer`` writes its own config (one ``file_sd_configs`` job reading
  ``sd_file`` every second, ``honor_labels: true`` so exposed labels are never renamed
  to ``exported_*``), listens on ``127.0.0.1:<free port>``, keeps its TSDB in a temporary
  directory and waits for ``/-/ready``. On exit -- normal, exception or Ctrl-C -- it
  sends SIGTERM, SIGKILL after a grace period, and removes the directory. A server that
  fails to start raises ``PrometheusStartError`` with the tail of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "PrometheusNotInstalled",
    "PrometheusServer",
    "PrometheusStartError",
    "ensure_prometheus",
]

DEBIAN_BINARY = Path("/usr/bin/prometheus")
JOB_NAME = "kserve-revisions"
_APT_TIMEOUT_S = 900.0


class PrometheusNotInstalled(Exception):
    """No prometheus binary, and it could not be installed from here."""


class PrometheusStartError(RuntimeError):
    """The prometheus process exited or never became ready."""


def _find_binary() -> Path | None:
    if DEBIAN_BINARY.is_file() and os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    found = shutil.which("prometheus")
    return Path(found) if found else None


def ensure_prometheus() -> Path:
    """Path of a prometheus binary, installing Debian's package as root if needed."""
    binary = _find_binary()
    if binary is not None:
        return binary
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PrometheusNotInstalled(
            "prometheus is not installed: install Debian's package as root "
            "(`apt-get install -y --no-install-recommends prometheus`) or put a "
            "`prometheus` binary (2.x) on PATH"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    failure = _run(install, env)
    if failure is not None:  # most often: no package lists yet on a fresh machine
        update_failure = _run(["apt-get", "update"], env)
        failure = _run(install, env) if update_failure is None else update_failure
    binary = _find_binary()
    if binary is None:
        raise PrometheusNotInstalled(f"installing Debian's prometheus package failed:\n{failure}")
    return binary


def _run(command: list[str], env: dict[str, str]) -> str | None:
    """Run a bounded command; None on success, else a short description of the failure."""
    try:
        done = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)}: {exc}"
    if done.returncode == 0:
        return None
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
    return f"{' '.join(command)} exited {done.returncode}:\n{tail}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_live: set[PrometheusServer] = set()  # strong refs: a dropped server is still stopped


@atexit.register
def _stop_leftovers() -> None:
    """Last resort at interpreter exit for servers that were never closed."""
    for server in list(_live):
        server.close()


class PrometheusServer:
    """Context manager around one private ``prometheus`` process."""

    def __init__(
        self,
        *,
        sd_file: Path,
        scrape_interval: str = "1s",
        workdir: Path | None = None,
        port: int | None = None,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.sd_file = Path(sd_file).resolve()
        self.scrape_interval = scrape_interval
        self.workdir = workdir
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None or self._process is None:
            raise RuntimeError("prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path | None:
        return None if self._tmpdir is None else self._tmpdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        """The configuration written for the process (JSON is valid YAML)."""
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": JOB_NAME,
                    "honor_labels": True,
                    "file_sd_configs": [{"files": [str(self.sd_file)], "refresh_interval": "1s"}],
                }
            ],
        }

    def __enter__(self) -> PrometheusServer:
        binary = ensure_prometheus()
        if self.workdir is not None:
            Path(self.workdir).mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix="rollwise-prometheus-", dir=self.workdir))
        _live.add(self)
        try:
            self._start(binary)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, binary: Path) -> None:
        assert self._tmpdir is not None
        config_path = self._tmpdir / "prometheus.yml"
        config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        if self.port is None:
            self.port = _free_port()
        command = [
            str(binary),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self._tmpdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ]
        with open(self._tmpdir / "prometheus.log", "wb") as log:
            # Own session: a terminal's Ctrl-C reaches only us; we stop it in close().
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrometheusStartError(
                    f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise PrometheusStartError(
            f"prometheus not ready after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))

    def close(self) -> None:
        """Terminate, kill after the grace period, remove the temp dir; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.stop_grace_s)
        tmpdir, self._tmpdir = self._tmpdir, None
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        _live.discard(self)

    # ------------------------------------------------------------------ conveniences

    def api(self, path: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus API {path}: {body}")
        return body["data"]

    def wait_for_targets(self, addresses: set[str], timeout_s: float = 30.0) -> None:
        """Block until every ``host:port`` in ``addresses`` has been scraped successfully."""
        deadline = time.monotonic() + timeout_s
        healthy: set[str] = set()
        while time.monotonic() < deadline:
            targets = self.api("targets?state=active")["activeTargets"]
            healthy = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
            if addresses <= healthy:
                return
            time.sleep(0.2)
        raise TimeoutError(f"targets {sorted(addresses - healthy)} not up after {timeout_s}s")
