"""Traffic routing: reading InferenceServices and writing canary weights with the state.

``kserve`` is pure (observation and patch building); ``client`` is the thin adapter on
the official ``kubernetes`` client. The reconciler depends only on the
``InferenceServices`` protocol below, so its tests run on an in-memory fake and assert
the exact patch it sends (as Argo Rollouts' tests do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from controller.errors import Conflict, Rejected

__all__ = ["Conflict", "InferenceServices", "Rejected"]


class InferenceServices(Protocol):
    """The slice of the Kubernetes API the reconciler needs."""

    def list(self) -> list[Mapping[str, Any]]:
        """Every InferenceService in the watched namespaces."""

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """One InferenceService, or None when it is gone."""

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Apply a JSON merge patch; raise Conflict on a stale resourceVersion, Rejected when
        the API server refuses the write as invalid (e.g. annotations over 256 KiB)."""
