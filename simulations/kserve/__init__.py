"""A simulated KServe controller (Serverless/Knative mode) for the test world.

:mod:`simulations.kserve.rules` holds KServe's and Knative's decisions as a pure function;
:mod:`simulations.kserve.controller` runs them against a real kube-apiserver.
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
