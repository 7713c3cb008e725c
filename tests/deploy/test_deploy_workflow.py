"""The kind end-to-end recipe (which cannot run here) installs what the docs say, the way
a user would, and pins everything it downloads."""

from __future__ import annotations

import re
from typing import Any

import yaml
from deploy_helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yaml"


def _steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    return list(job["steps"])


def _script() -> str:
    return "\n".join(step.get("run", "") for step in _steps())


def test_rollwise_is_installed_as_users_install_it() -> None:
    script = _script()
    assert "kubectl apply -k deploy/overlays/dev" in script
    assert "docker build -f deploy/Dockerfile -t rollwise:dev ." in script
    assert "kind load docker-image rollwise:dev" in script
    # The image name the dev overlay deploys is the one built and loaded.
    overlay = yaml.safe_load((ROOT / "deploy/overlays/dev/kustomization.yaml").read_text())
    (image,) = overlay["images"]
    assert f"{image['newName']}:{image['newTag']}" == "rollwise:dev"


def test_the_cluster_tests_run_against_the_cluster_and_read_its_kubeconfig() -> None:
    (step,) = [s for s in _steps() if "ROLLWISE_E2E_KUBECONFIG" in s.get("env", {})]
    assert "pytest -m cluster -ra tests/cluster" in step["run"]
    # ... which the tests read (without it they run on the simulated cluster: make test).
    tests = (ROOT / "tests" / "cluster" / "test_cluster.py").read_text()
    assert 'os.environ.get("ROLLWISE_E2E_KUBECONFIG")' in tests


def test_everything_downloaded_is_pinned() -> None:
    for step in _steps():
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    env = yaml.safe_load(WORKFLOW.read_text())["env"]
    assert re.search(r"@sha256:[0-9a-f]{64}$", env["KIND_NODE_IMAGE"])
    assert re.search(r"/kserve/kserve/[0-9a-f]{40}/hack/quick_install\.sh$",
                     env["KSERVE_QUICK_INSTALL"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", env["KUBE_PROMETHEUS_STACK_VERSION"])
