"""Fixtures for the deployment checks: the kustomize output of each overlay, read once.

Rendering uses the kubectl built from upstream by ``simulations.kube.build`` (through the
``kube_binaries`` fixture, which builds it once before the first test and outside any
test's timeout), never whatever kubectl happens to be on PATH.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, OVERLAYS, Manifest, is_sink, kustomize

from simulations.kube.build import Binaries

Render = Callable[[Path], list[Manifest]]


@pytest.fixture(scope="session")
def render(kube_binaries: Binaries) -> Render:
    """Render a kustomization directory (cached per directory for the session)."""
    cache: dict[Path, list[Manifest]] = {}

    def _render(directory: Path) -> list[Manifest]:
        if directory not in cache:
            cache[directory] = kustomize(kube_binaries.kubectl, directory)
        return cache[directory]

    return _render


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def everything(render: Render, overlay: str) -> list[Manifest]:
    """Every object `kubectl apply -k deploy/overlays/<overlay>` would create."""
    return render(DEPLOY / "overlays" / overlay)


@pytest.fixture
def objects(everything: list[Manifest]) -> list[Manifest]:
    """The controller's objects: everything but the prediction sink's."""
    return [o for o in everything if not is_sink(o)]
