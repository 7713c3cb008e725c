"""Traffic routers: one module per way of serving a model, behind ``base.TrafficRouter``.

======================  ========================================================
``base``               the Protocol, ``Resource``, ``spec_hash``, ``choose``
``kserve_knative``     KServe InferenceServices in Knative (serverless) mode
``kserve_standard``    KServe InferenceServices in Standard (RawDeployment) mode
``deployment_gateway``  plain Deployments and Services behind a Gateway API HTTPRoute
======================  ========================================================

``ROUTERS`` is every router the controller drives objects with, in the order they are
asked (the first whose ``supports`` accepts an object drives it). Pure, like the routers.
"""

from __future__ import annotations

from controller.routers.base import Ref, Related, Resource, TrafficRouter, choose, spec_hash
from controller.routers.deployment_gateway import DEPLOYMENT_GATEWAY
from controller.routers.kserve_knative import KNATIVE
from controller.routers.kserve_standard import STANDARD

ROUTERS: tuple[TrafficRouter, ...] = (KNATIVE, STANDARD, DEPLOYMENT_GATEWAY)

__all__ = ["ROUTERS", "Ref", "Related", "Resource", "TrafficRouter", "choose", "spec_hash"]
