"""The MySQL backend against a real MariaDB (Debian's ``mariadb-server``), started by the
test on 127.0.0.1 with a temporary data directory: the same lineage as on SQLite, and an
outage (the server stopped mid-rollout, then restarted) caught up exactly once."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_metadata.proto.metadata_store_pb2 as _pb2
import pytest
from ml_metadata.metadata_store import metadata_store
from prometheus_client import CollectorRegistry

from controller.lineage.gate import evaluate_gate
from controller.lineage.mlmd import ROLLOUT_TYPE, MLMDLineageStore
from controller.lineage.worker import LineageWorker
from controller.policy.model import MetricThreshold, PreRolloutGate
from controller.settings import MLMDSettings
from tests.lineage.helpers import story
from tests.lineage.kfp_writer import KfpWriter, s3_form
from tests.lineage.mlmd_grpc import free_port

pb: Any = _pb2
pytestmark = pytest.mark.e2e

SERVER = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")
if SERVER is None or INSTALL_DB is None:
    # Never a silent skip: `make test` installs it (make system-deps).
    pytest.fail("MariaDB is not installed: run `make system-deps` (apt-get install "
                "mariadb-server)", pytrace=False)


class MariaDB:
    """A throwaway MariaDB on 127.0.0.1 (root without password, data in a temp dir)."""

    def __init__(self) -> None:
        # Short path: the unix socket path must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="rw-mdb-"))
        self.port = free_port()
        self.user = getpass.getuser()
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run([str(INSTALL_DB), "--no-defaults", f"--datadir={self.dir / 'data'}",
                        f"--user={self.user}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, timeout: float = 60.0) -> None:
        log = (self.dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(SERVER), "--no-defaults", f"--datadir={self.dir / 'data'}",
             f"--socket={self.dir / 'sock'}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.dir / 'pid'}", f"--user={self.user}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=16M"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.dir / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mariadbd did not listen on {self.port} within {timeout} s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def settings(self) -> MLMDSettings:
        return MLMDSettings(backend="mysql", mysql_host="127.0.0.1", mysql_port=self.port,
                            mysql_database="mlmd", mysql_user="root")

    def raw(self) -> Any:
        config = pb.ConnectionConfig()
        config.mysql.host, config.mysql.port = "127.0.0.1", self.port
        config.mysql.database, config.mysql.user = "mlmd", "root"
        return metadata_store.MetadataStore(config)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def mariadb() -> Iterator[MariaDB]:
    server = MariaDB()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def test_lineage_and_gate_on_mariadb(mariadb: MariaDB) -> None:
    kfp = KfpWriter(mariadb.raw())
    v1 = kfp.run(run_id="run-v1", metrics={"accuracy": 0.91, "auc": 0.93})
    v2 = kfp.run(run_id="run-v2", metrics={"accuracy": 0.95, "auc": 0.96})
    snapshots = story(s3_form(v2.model_uri), s3_form(v1.model_uri))
    first = MLMDLineageStore(mariadb.settings())
    for snap in snapshots[:3]:
        first.record(snap)
    first.close()
    second = MLMDLineageStore(mariadb.settings())          # a restarted controller
    for snap in snapshots + snapshots:
        second.record(snap)
    evaluation = second.evaluation(s3_form(v2.model_uri))
    gate = PreRolloutGate(metrics=[MetricThreshold(name="auc", min=0.9)])
    assert evaluate_gate(gate, evaluation).reason == "auc 0.96 >= min 0.9 (run run-v2)"
    view = second.view("team-a", "iris")
    assert [(r["outcome"], r["state"], r["approvers"]) for r in view.rollouts] == [
        ("Succeeded", "COMPLETE", ["alice@example.com"])]
    raw = mariadb.raw()
    [execution] = raw.get_executions_by_type(ROLLOUT_TYPE)
    assert len(raw.get_events_by_execution_ids([execution.id])) == 3


def test_a_mariadb_outage_mid_rollout_is_caught_up(mariadb: MariaDB) -> None:
    registry = CollectorRegistry()
    store = MLMDLineageStore(mariadb.settings())
    worker = LineageWorker(store, registry, initial_backoff=0.1, max_backoff=0.5)
    worker.start()
    try:
        snapshots = story("s3://models/iris/v2", "s3://models/iris/v1")
        worker.submit(snapshots[0])
        assert worker.flush(20)

        mariadb.stop()
        for snap in snapshots[1:]:
            worker.submit(snap)
        deadline = time.monotonic() + 20
        while (registry.get_sample_value("rollwise_lineage_write_errors_total") or 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not worker.healthy and worker.pending() == 1

        mariadb.start()
        assert worker.flush(30), worker.last_error
        assert worker.healthy
        raw = mariadb.raw()
        [execution] = raw.get_executions_by_type(ROLLOUT_TYPE)
        assert pb.Execution.State.Name(execution.last_known_state) == "COMPLETE"
        assert len(raw.get_events_by_execution_ids([execution.id])) == 3
    finally:
        assert worker.stop(10)
