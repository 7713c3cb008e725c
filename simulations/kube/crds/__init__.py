"""The CustomResourceDefinitions the simulated control plane installs, and their references.

The YAML files next to this module are unmodified copies (README.md: sources, commits,
sha256) of KServe's InferenceService CRD and of the Gateway API v1.6.1 standard-channel
CRDs. ``shared_reference_dir`` finds the shared reference copies they must stay identical to.

Pure apart from looking at the file system. Callers: :mod:`simulations.kube.controlplane`
(what to install) and the CRD identity tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["CRD_DIR", "GATEWAY_API_CRDS", "KSERVE_CRD", "shared_reference_dir"]

CRD_DIR: Final = Path(__file__).parent
KSERVE_CRD: Final = CRD_DIR / "serving.kserve.io_inferenceservices.yaml"
#: The standard channel of Gateway API v1.6.1: what KServe 0.20+ Standard mode writes its
#: HTTPRoutes against (``enableGatewayApi``), and what a gateway implementation serves.
GATEWAY_API_CRDS: Final = tuple(
    CRD_DIR / f"gateway.networking.k8s.io_{plural}.yaml"
    for plural in ("gatewayclasses", "gateways", "httproutes", "referencegrants")
)


def shared_reference_dir(start: Path = CRD_DIR) -> Path | None:
    """The ``shared/reference`` directory beside the nearest ancestor of ``start``, if any.

    The main checkout (``/work/main``) and the worktrees (``/work/wt/<name>``) sit at
    different depths below the directory that holds ``shared/``, so the reference is looked
    for upwards rather than at a fixed ``../shared``.
    """
    for ancestor in start.resolve().parents:
        candidate = ancestor / "shared" / "reference"
        if candidate.is_dir():
            return candidate
    return None
