"""Rollwise's exception tree. Adapters translate library errors into these at their
boundary (chained with ``from``), and every message names the object it concerns, so the
reconciler and the CLI never see an ``ApiException`` or a ``urllib3`` error.

::

    RollwiseError
     +-- KubeError                  a Kubernetes API call failed (names the object, and the
     |    |                         HTTP status when there was an answer: ``status``)
     |    +-- Conflict              409: the object changed since it was read; re-read
     |    |    +-- LeaseConflict    the leader Lease changed since it was read
     |    +-- Rejected              400/413/422: the API server refused the write as invalid
     |    |                         (or 403 from an admission webhook, e.g. KServe's validator)
     |    +-- LeaseUnavailable      a Lease request failed; ``kind`` says how
     +-- KubeConfigError            no usable way to reach the API server (says what was tried)
     +-- Unsupported                the object opted in, but no traffic router can drive it
     +-- StateUnreadable            an annotation Rollwise keeps is not one it wrote, or is
                                    inconsistent with the policy; the object is not acted on

Pure: no imports beyond the standard library.
"""

from __future__ import annotations


class RollwiseError(Exception):
    """The root: anything Rollwise raises on purpose."""


class KubeError(RollwiseError):
    """A Kubernetes API call failed; the message names the object and the API's answer.
    ``status`` is the HTTP status of that answer (None: no answer, e.g. connection refused)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Conflict(KubeError):
    """The object changed since it was read (HTTP 409): re-read next tick, do nothing now."""


class Rejected(KubeError):
    """The API server refused the write as invalid (HTTP 400, 413, 422, or an admission
    webhook's 403 "denied the request"): retrying the same write cannot succeed, so the
    object is reported, not retried in a loop."""


class LeaseConflict(Conflict):
    """The Lease changed, appeared or vanished since it was read (409, or 404 on replace)."""


class LeaseUnavailable(KubeError):
    """A Lease request failed; ``kind`` says how (``http-503``, ``ConnectionRefusedError``)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class KubeConfigError(RollwiseError):
    """No usable way to reach the API server; the message says what was tried."""


class Unsupported(RollwiseError):
    """The object opted in (``rollwise.io/policy``) but no traffic router can drive it (a
    KServe InferenceService in ModelMesh mode, say): the message says why. It is reported on
    the object and left alone, never silently "managed"."""


class StateUnreadable(RollwiseError):
    """A ``rollwise.io/*`` annotation that Rollwise reads back is unreadable, was not written
    by Rollwise, or does not fit the policy (a step beyond its steps): nothing is done on the
    object until it is fixed or removed."""
