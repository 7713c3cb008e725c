"""The simulated world end to end: KServe's split reaches Prometheus' counts, and a person
can explore the world with kubectl through `rollwise sim up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_api_client import PrometheusConnect

from simulations.endpoints import Behaviour
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import wait_for

pytestmark = pytest.mark.e2e


def test_canary_percent_moves_the_share_prometheus_counts(kube_binaries: Binaries) -> None:
    good = Behaviour(error_rate=0.0)
    config = WorldConfig(models={"s3://m/v1": good, "s3://m/v2": good}, ready_delay=0.5)
    with World(config, binaries=kube_binaries) as world:
        world.create_isvc("models", "share", "s3://m/v1")
        wait_for(lambda: (world.get_isvc("models", "share").get("status") or {}).get("components",
              {}).get("predictor", {}).get("latestRolledoutRevision"), 30, "first revision")
        world.patch_isvc("models", "share", {"spec": {"predictor": {
            "model": {"storageUri": "s3://m/v2"}, "canaryTrafficPercent": 30}}})

        def split_ready() -> bool:
            traffic = world.get_isvc("models", "share")["status"]["components"]["predictor"][
                "traffic"]
            return {t["revisionName"]: t["percent"] for t in traffic} == {
                "share-predictor-00002": 30, "share-predictor-00001": 70}

        wait_for(split_ready, 30, "a 30/70 split in status.traffic")
        generator = world.start_traffic("models", "share", 300, max_seconds=14)
        time.sleep(14)
        generator.stop()
        time.sleep(3)  # two scrapes after the last request
        prom = PrometheusConnect(world.prometheus.url)
        samples = prom.custom_query('sum by (revision_name) (revision_app_request_count'
                                    '{namespace_name="models"})')
        counts = {s["metric"]["revision_name"]: float(s["value"][1]) for s in samples}
        total = sum(counts.values())
        assert total > 2000, counts
        share = counts["share-predictor-00002"] / total
        assert abs(share - 0.30) < 0.04, counts


def test_sim_up_serves_kubectl_and_stops_cleanly(tmp_path: Path,
                                                 kube_binaries: Binaries) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen([sys.executable, "-m", "controller", "sim", "up",
                                "--kubeconfig", str(kubeconfig)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any("Prometheus:" in line for line in lines), "".join(lines)
        kubectl = [str(kube_binaries.kubectl), "--kubeconfig", str(kubeconfig)]
        crds = subprocess.run([*kubectl, "get", "crd", "-o", "name"], capture_output=True,
                              text=True, timeout=30)
        assert "inferenceservices.serving.kserve.io" in crds.stdout, crds.stderr
        can_i = subprocess.run([*kubectl, "auth", "can-i", "delete", "inferenceservices",
                                "--as", "system:serviceaccount:rollwise-system:"
                                "rollwise-controller", "-n", "models"],
                               capture_output=True, text=True, timeout=30)
        assert can_i.stdout.strip() == "no"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0
