"""Kubernetes Events on the managed objects, one per rollout transition.

I/O (thin). Each Event's name is derived from its key (the rollout id and the transition,
``controller.rollout.machine.with_event_records``), so a retry or a restart that records
the same transition again gets 409 AlreadyExists and does nothing: no side effect happens
twice. The in-memory twin is ``fakes.FakeEvents``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.kube import OnError
from controller.rollout.machine import MAX_EVENT_MESSAGE
from controller.routers.base import Resource

log = structlog.get_logger(__name__)
COMPONENT = "rollwise"


def event_name(name: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{name[:200]}.rollwise.{digest}"


class KubeEventRecorder:
    """``EventRecorder`` on the core API, for objects of ``resource``."""

    def __init__(self, api_client: client.ApiClient, resource: Resource,
                 on_error: OnError | None = None) -> None:
        self._api = client.CoreV1Api(api_client)
        self._resource = resource
        self._on_error = on_error

    def record(self, namespace: str, name: str, uid: str, *, key: str, reason: str,
               message: str, warning: bool, at: datetime) -> None:
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=event_name(name, key), namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=self._resource.api_version, kind=self._resource.kind,
                name=name, namespace=namespace, uid=uid),
            reason=reason, message=message[:MAX_EVENT_MESSAGE],
            type="Warning" if warning else "Normal",
            first_timestamp=at, last_timestamp=at, count=1,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT, reporting_instance=COMPONENT,
        )
        try:
            self._api.create_namespaced_event(namespace, body, _request_timeout=10)
        except ApiException as err:
            if err.status == 409:
                return  # already recorded: this transition was reported before a restart
            if self._on_error:
                self._on_error("create-event")
            log.warning("event not recorded", namespace=namespace, name=name, reason=reason,
                        status=err.status)
