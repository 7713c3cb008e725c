"""Traffic routers: one module per way of serving a model, behind ``base.TrafficRouter``.

=====================  ==========================================================
``base``               the Protocol, ``Resource``, ``spec_hash``, ``choose``
``kserve_knative``     KServe InferenceServices in Knative (serverless) mode
=====================  ==========================================================

``ROUTERS`` is every router the controller drives objects with, in the order they are
asked (the first whose ``supports`` accepts an object drives it). Pure, like the routers.
"""

from __future__ import annotations

from controller.routers.base import Resource, TrafficRouter, choose, spec_hash
from controller.routers.kserve_knative import KNATIVE

ROUTERS: tuple[TrafficRouter, ...] = (KNATIVE,)

__all__ = ["ROUTERS", "Resource", "TrafficRouter", "choose", "spec_hash"]
