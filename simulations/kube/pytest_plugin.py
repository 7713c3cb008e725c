"""pytest fixtures for the simulated control plane: `cluster`, `admin_api`, `controller_api`.

Registered by tests/conftest.py. When the collected tests need the control plane,
the binaries are built (or the cache checked) once, right after collection and
before the first test, so a cold build shows its progress on the terminal and is
not counted against any test's timeout. The control plane itself starts once
per session, on first use, with the controller's RBAC from deploy/rbac/ (or the
test fixture while that directory does not exist).

I/O: builds binaries and runs etcd and kube-apiserver. Callers: pytest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from simulations.kube.build import PROJECT_ROOT, Binaries, BuildError, ensure_binaries
from simulations.kube.controlplane import Cluster, ControlPlane

__all__ = ["admin_api", "cluster", "controller_api", "default_manifests", "kube_binaries"]

_BINARIES_FIXTURE = "kube_binaries"
_OUTCOME = pytest.StashKey[Binaries | BuildError]()


def default_manifests(root: Path = PROJECT_ROOT) -> list[Path]:
    """The controller's RBAC: deploy/rbac/*.yaml, else the stand-in test fixture."""
    rbac_dir = root / "deploy" / "rbac"
    found = sorted(rbac_dir.glob("*.yaml")) if rbac_dir.is_dir() else []
    return found or [root / "tests" / "fixtures" / "rbac-fixture.yaml"]


def _prepare_binaries(config: pytest.Config) -> Binaries | BuildError:
    """Build or validate once per session; a failure is kept for the fixtures to raise."""
    if _OUTCOME not in config.stash:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")

        def progress(message: str) -> None:
            if reporter is None:
                return
            suspended = (capture.global_and_fixture_disabled() if capture is not None
                         else contextlib.nullcontext())
            with suspended:
                reporter.write_line(message)

        try:
            config.stash[_OUTCOME] = ensure_binaries(progress=progress)
        except BuildError as error:
            config.stash[_OUTCOME] = error
    return config.stash[_OUTCOME]


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(_BINARIES_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items):
        _prepare_binaries(session.config)


@pytest.fixture(scope="session")
def kube_binaries(pytestconfig: pytest.Config) -> Binaries:
    """kube-apiserver, etcd and kubectl of the pinned versions."""
    outcome = _prepare_binaries(pytestconfig)
    if isinstance(outcome, BuildError):
        raise outcome
    return outcome


@pytest.fixture(scope="session")
def cluster(kube_binaries: Binaries) -> Iterator[Cluster]:
    """One control plane for the whole session, with the KServe CRD and the controller RBAC."""
    with ControlPlane(manifests=default_manifests(), binaries=kube_binaries) as running:
        yield running


@pytest.fixture(scope="session")
def admin_api(cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """A client acting as cluster admin (system:masters)."""
    with cluster.admin_api_client() as api:
        yield api


@pytest.fixture(scope="session")
def controller_api(cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """A client with exactly the controller ServiceAccount's RBAC."""
    with cluster.controller_api_client() as api:
        yield api
