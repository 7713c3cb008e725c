"""The InferenceService CRD of KServe releases before 0.20, derived from the kept one.

KServe 0.20 (kserve/kserve PR #5672, commit 43ec86b5) added exactly three things to
``config/crd/full/serving.kserve.io_inferenceservices.yaml``: ``spec.canary``,
``spec.predictor.name`` and ``status.canaryStatuses``. Removing them from the kept CRD
(simulations/kube/crds, v0.20+) gives what a cluster with KServe 0.19 or older validates
against as far as canaries are concerned (0.19's CRD also lacks ``confidential`` and
``storageContainerName``, which nothing here uses). Derived rather than kept as a second
2 MB copy.

Pure apart from reading the kept CRD. Callers: tests that show what a router meets on an
older KServe (the API server prunes ``spec.canary``, or refuses it with strict field
validation).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from simulations.kube.crds import KSERVE_CRD

__all__ = ["kserve_crd_before_canary"]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kserve_crd_before_canary(source: Path = KSERVE_CRD) -> dict[str, Any]:
    """The CRD at ``source`` without PR #5672's fields, in every served version."""
    crd: dict[str, Any] = yaml.load(source.read_text(), Loader=_Loader)
    derived = copy.deepcopy(crd)
    for version in derived["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]["properties"]
        spec, status = schema["spec"]["properties"], schema["status"]["properties"]
        for fields, name in ((spec, "canary"), (spec["predictor"]["properties"], "name"),
                             (status, "canaryStatuses")):
            if name not in fields:
                raise ValueError(f"{source}: {name!r} not in the CRD schema; is it KServe 0.20+?")
            del fields[name]
    return derived
