"""Rollwise's exception tree. Adapters translate library errors into these at their
boundary (chained with ``from``), and every message names the object it concerns, so the
reconciler and the CLI never see an ``ApiException`` or a ``urllib3`` error.

::

    RollwiseError
     +-- KubeError                  a Kubernetes API call failed (names namespace/name)
     |    +-- Conflict              409: the object changed since it was read; re-read
     |    +-- Rejected              400/413/422: the API server refused the write as invalid
     +-- StateUnreadable            an annotation Rollwise keeps is not one it wrote, or is
                                    inconsistent with the policy; the object is not acted on

Pure: no imports beyond the standard library.
"""

from __future__ import annotations


class RollwiseError(Exception):
    """The root: anything Rollwise raises on purpose."""


class KubeError(RollwiseError):
    """A Kubernetes API call failed; the message names the object and the API's answer."""


class Conflict(KubeError):
    """The object changed since it was read (HTTP 409): re-read next tick, do nothing now."""


class Rejected(KubeError):
    """The API server refused the write as invalid (HTTP 400, 413, 422): retrying the same
    write cannot succeed, so the object is reported, not retried in a loop."""


class StateUnreadable(RollwiseError):
    """A ``rollwise.io/*`` annotation that Rollwise reads back is unreadable, was not written
    by Rollwise, or does not fit the policy (a step beyond its steps): nothing is done on the
    object until it is fixed or removed."""
