"""The real kube-apiserver (the simulated control plane) accepts every built-in object the
overlays install, and admits the controller's pod under Pod Security "restricted".

Server-side dry runs: nothing is created except a scratch namespace, removed afterwards.
The custom resources (cert-manager, Prometheus Operator) are left out: their CRDs are not
installed in the simulated control plane.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, OVERLAYS, Manifest, find

from simulations.kube.build import Binaries
from simulations.kube.controlplane import Cluster

pytestmark = pytest.mark.e2e

Render = Callable[[Path], list[Manifest]]
KUBECTL_TIMEOUT_S = 60
CUSTOM_RESOURCES = {"cert-manager.io/v1", "monitoring.coreos.com/v1"}


def _kubectl(binaries: Binaries, cluster: Cluster, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.kubectl), "--kubeconfig", str(cluster.admin_kubeconfig),
         "--request-timeout=30s", *args],
        input=stdin, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_server_accepts_every_built_in_object(
        render: Render, kube_binaries: Binaries, cluster: Cluster, overlay: str) -> None:
    objects = [o for o in render(DEPLOY / "overlays" / overlay)
               if o["apiVersion"] not in CUSTOM_RESOURCES]
    result = _kubectl(kube_binaries, cluster, "apply", "--dry-run=server", "-f", "-",
                      stdin=yaml.safe_dump_all(objects))
    assert result.returncode == 0, result.stderr


def test_the_controller_pod_is_admitted_under_pod_security_restricted(
        render: Render, kube_binaries: Binaries, cluster: Cluster) -> None:
    objects = render(DEPLOY / "overlays" / "prod")
    template = find(objects, "Deployment", "rollwise-controller")["spec"]["template"]
    namespace = f"rollwise-psa-{uuid.uuid4().hex[:6]}"
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "rollwise-controller", "namespace": namespace,
                     "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    setup = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {
             "pod-security.kubernetes.io/enforce": "restricted",
             "pod-security.kubernetes.io/enforce-version": "latest"}}},
        # No controller-manager here creates service accounts; the pod names this one.
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": template["spec"]["serviceAccountName"], "namespace": namespace}},
    ]
    created = _kubectl(kube_binaries, cluster, "create", "-f", "-",
                       stdin=yaml.safe_dump_all(setup))
    assert created.returncode == 0, created.stderr
    try:
        result = _kubectl(kube_binaries, cluster, "create", "--dry-run=server", "-f", "-",
                          stdin=yaml.safe_dump(pod))
        assert result.returncode == 0, result.stderr
        assert "violate" not in result.stderr, result.stderr
    finally:
        _kubectl(kube_binaries, cluster, "delete", "namespace", namespace, "--wait=false")
