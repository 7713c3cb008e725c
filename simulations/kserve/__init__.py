"""A simulated KServe controller (Knative and Standard modes) for the test world.

:mod:`simulations.kserve.rules` holds KServe's and Knative's decisions for Knative mode,
:mod:`simulations.kserve.standard` (with :mod:`simulations.kserve.httproute`) those for
Standard mode and ``spec.canary[]``, all as pure functions;
:mod:`simulations.kserve.controller` runs them against a real kube-apiserver, and
:mod:`simulations.kserve.crd` derives the CRD of KServe before 0.20.
"""

from simulations.kserve.controller import RevisionEvent, SimulatedKServe
from simulations.kserve.rules import InferenceService, Readiness, Revision, Settings

__all__ = [
    "InferenceService",
    "Readiness",
    "Revision",
    "RevisionEvent",
    "Settings",
    "SimulatedKServe",
]
