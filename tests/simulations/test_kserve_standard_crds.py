"""The Gateway API CRDs the world installs are the shared reference copies, unmodified.

Also: the shared reference is found from a worktree as well as from the main checkout
(before, ``PROJECT_ROOT.parent / "shared"`` missed it from ``/work/wt/<name>``, so the
identity checks passed without comparing anything).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from simulations.kube.crds import CRD_DIR, GATEWAY_API_CRDS, KSERVE_CRD, shared_reference_dir


def test_the_kept_gateway_api_crds_are_recorded_in_the_readme() -> None:
    readme = (CRD_DIR / "README.md").read_text()
    for path in GATEWAY_API_CRDS:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}` | `{digest}`" in readme, path.name


def test_the_kept_gateway_api_crds_are_the_shared_reference_unmodified() -> None:
    reference = shared_reference_dir()
    if reference is None:
        pytest.skip("no shared/reference directory above this checkout (a fresh clone)")
    upstream = sorted((reference / "gateway-api").glob("*.yaml"))
    assert [p.name for p in upstream] == sorted(p.name for p in GATEWAY_API_CRDS)
    for path in GATEWAY_API_CRDS:
        assert path.read_bytes() == (reference / "gateway-api" / path.name).read_bytes(), path


def test_the_kept_kserve_crd_is_compared_from_a_worktree_too() -> None:
    from simulations.kube.controlplane import SHARED_REFERENCE_CRD

    reference = shared_reference_dir()
    if reference is None:
        pytest.skip("no shared/reference directory above this checkout (a fresh clone)")
    assert reference / "kserve" / KSERVE_CRD.name == SHARED_REFERENCE_CRD
    assert SHARED_REFERENCE_CRD.read_bytes() == KSERVE_CRD.read_bytes()


@pytest.mark.parametrize("checkout", ["main", "wt/wstd"], ids=["main-checkout", "worktree"])
def test_the_shared_reference_is_found_above_any_checkout(tmp_path: Path, checkout: str) -> None:
    (tmp_path / "shared" / "reference" / "kserve").mkdir(parents=True)
    crds = tmp_path / checkout / "simulations" / "kube" / "crds"
    crds.mkdir(parents=True)
    assert shared_reference_dir(crds) == (tmp_path / "shared" / "reference").resolve()


def test_no_shared_reference_is_none(tmp_path: Path) -> None:
    crds = tmp_path / "main" / "simulations" / "kube" / "crds"
    crds.mkdir(parents=True)
    found = shared_reference_dir(crds)
    assert found is None or not found.is_relative_to(tmp_path)
