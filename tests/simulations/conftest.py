"""The Deployments world (kube-controller-manager, a node agent, the gateway), started once
per session for tests/simulations/test_nodes.py and test_gateway.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulations.kube.build import Binaries
from simulations.world import World
from tests.simulations.deployments import make_world


@pytest.fixture(scope="session")
def deployment_world(kube_binaries: Binaries) -> Iterator[World]:
    with make_world(kube_binaries) as world:
        yield world
