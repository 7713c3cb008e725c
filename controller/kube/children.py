"""The objects a router makes beside the one it drives (a canary Deployment and Service, the
HTTPRoute's backendRefs), written level-triggered: the router's pure ``children`` says
which writes make them match the committed rollout state, and ``ChildWriter.apply`` sends
them in order. Idempotent: a create of an object that exists and a delete of one that is
gone are outcomes, not faults (a restart or a second replica got there first); a patch is
fenced by the resourceVersion the router read, so a hand edit since is never overwritten
(``Conflict``: the next pass re-reads).

I/O (thin). The in-memory twin is ``fakes.FakeChildren``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import KubeError
from controller.kube import ChildWriter
from controller.kube.client import REQUEST_TIMEOUT, TRANSPORT_ERRORS, failure
from controller.routers.base import Write

__all__ = ["ChildWriter", "KubeChildren"]


class KubeChildren:
    """``ChildWriter`` on the API server: core Services through CoreV1Api, everything else
    (apps/v1 Deployments, HTTPRoutes) through the generic custom-objects paths."""

    def __init__(self, api_client: client.ApiClient,
                 on_api_error: Callable[[str], None] | None = None) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._on_api_error = on_api_error or (lambda verb: None)

    def apply(self, writes: Sequence[Write]) -> None:
        for write in writes:
            self._one(write)

    def _one(self, write: Write) -> None:
        r = write.resource
        what = f"{r.kind} {write.namespace}/{write.name}"
        ignore = {"create": 409, "delete": 404}.get(write.verb)
        try:
            self._call(write)
        except ApiException as err:
            if err.status == ignore:
                return
            if not (write.verb == "patch" and err.status == 409):
                self._on_api_error(write.verb)
            raise failure(write.verb, what, err) from err
        except TRANSPORT_ERRORS as err:
            raise failure(write.verb, what, err) from err

    def _call(self, write: Write) -> Any:
        r, ns, name, body = write.resource, write.namespace, write.name, dict(write.body or {})
        timeout = REQUEST_TIMEOUT
        if r.group == "":
            if r.plural != "services" or write.verb == "patch":
                raise KubeError(f"cannot {write.verb} {r.kind} {ns}/{name}: only creating "
                                "and deleting core Services is supported")
            if write.verb == "create":
                service = client.V1Service(**{k: body.get(k) for k in ("metadata", "spec")},
                                           api_version="v1", kind="Service")
                return self._core.create_namespaced_service(ns, service,
                                                            _request_timeout=timeout)
            return self._core.delete_namespaced_service(name, ns, _request_timeout=timeout)
        if write.verb == "create":
            return self._custom.create_namespaced_custom_object(
                r.group, r.version, ns, r.plural, body, _request_timeout=timeout)
        if write.verb == "delete":
            return self._custom.delete_namespaced_custom_object(
                r.group, r.version, ns, r.plural, name, _request_timeout=timeout)
        return self._custom.patch_namespaced_custom_object(
            r.group, r.version, ns, r.plural, name, body, _request_timeout=timeout)
