"""Helpers shared by the deployment checks: render a kustomization, find objects in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The cluster-wide installs (the default) and the namespaced one, which is prod confined
# to the namespaces it watches.
CLUSTER_WIDE = ("prod", "dev")
OVERLAYS = (*CLUSTER_WIDE, "namespaced")
# What deploy/overlays/namespaced watches, its example.
WATCHED_EXAMPLE = ("models", "fraud")
RENDER_TIMEOUT_S = 60
OPERATIONS = ROOT / "docs" / "operations.md"

Manifest = dict[str, Any]
# The prediction sink's objects (deploy/base/sink/) carry this component label; the
# controller's checks leave them out (test_deploy_sink.py checks them).
SINK_COMPONENT = "prediction-sink"


def is_sink(obj: Manifest) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/component") == SINK_COMPONENT)


def kustomize(kubectl: Path, directory: Path) -> list[Manifest]:
    """`kubectl kustomize <directory>`, parsed; a failure shows kustomize's own message."""
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of that kind (and name)."""
    matches = [o for o in objects if o["kind"] == kind
               and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def controller_container(objects: list[Manifest]) -> Manifest:
    deployment = find(objects, "Deployment", "rollwise-controller")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "controller"]
    return dict(container)


def env_of(container: Manifest) -> dict[str, Any]:
    """Environment of a container: literal values as strings, references as their dict."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def container_port(objects: list[Manifest], name_or_number: str | int) -> int:
    """The controller container's port a probe, Service or policy names (by name or
    number); fails when the container has no such port."""
    ports = controller_container(objects)["ports"]
    if isinstance(name_or_number, int):
        assert name_or_number in {p["containerPort"] for p in ports}, name_or_number
        return name_or_number
    matches = [p["containerPort"] for p in ports if p["name"] == name_or_number]
    assert len(matches) == 1, f"no container port named {name_or_number!r}"
    return int(matches[0])


def listen_port(address: str) -> int:
    """The port of a ``host:port`` listen address."""
    return int(address.rpartition(":")[2])


def validate_schema(obj: Manifest, version: str) -> None:
    """Validate against the built-in API's schemas of that Kubernetes version, strictly
    (an unknown field is an error, so a misspelt field cannot pass silently)."""
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - a missing dev dependency, not a skip
        pytest.fail("kubernetes-validate is missing: pip install -c constraints.txt "
                    "-e '.[dev]'")
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = "/".join(str(obj["metadata"].get(k, "")) for k in ("namespace", "name"))
        pytest.fail(f"{obj['kind']} {where}: {err.message} at "
                    f"{'.'.join(str(p) for p in err.path)}")


def documented_ingress() -> Manifest:
    """The one Ingress in the YAML blocks of the "Slack interactivity" section."""
    text = OPERATIONS.read_text()
    section = re.search(r"^### Slack interactivity\n(.*?)^#{2,3} ", text, re.M | re.S)
    assert section, f"{OPERATIONS}: no 'Slack interactivity' section"
    documents: list[Any] = []
    for block in re.findall(r"^```yaml\n(.*?)^```", section[1], re.M | re.S):
        documents += [d for d in yaml.safe_load_all(block) if d]
    ingresses = [d for d in documents if d.get("kind") == "Ingress"]
    assert len(ingresses) == 1, f"{OPERATIONS}: expected one Ingress example"
    return dict(ingresses[0])
