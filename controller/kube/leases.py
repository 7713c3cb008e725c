"""The Lease adapter of ``controller.leader``: ``LeaseClient`` on coordination.k8s.io/v1,
with every failure translated into ``LeaseConflict`` or ``LeaseUnavailable`` (the
election loop counts them by kind). I/O; the in-memory twin is ``fakes.InMemoryLeases``.
"""

from __future__ import annotations

import copy

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.errors import LeaseConflict, LeaseUnavailable
from controller.kube import LeaseRecord
from controller.settings import LeaderElectionSettings


class KubeLeases:
    """``LeaseClient`` on coordination.k8s.io/v1. Its own connection pool, copied from the
    daemon's client (same credentials and User-Agent) with urllib3's retries off: each
    request is ONE attempt bounded by ``timeout`` (half the renew deadline), where the
    default three retries could have made it four times longer. The Lease belongs to
    the controller: a replace writes name, resourceVersion and spec only."""

    def __init__(self, api: client.ApiClient, settings: LeaderElectionSettings) -> None:
        configuration = copy.copy(api.configuration)
        configuration.retries = False
        own = client.ApiClient(configuration)
        own.user_agent = api.user_agent
        self._api = client.CoordinationV1Api(own)
        self.timeout = settings.renew_deadline_seconds / 2

    def get(self, namespace: str, name: str) -> LeaseRecord | None:
        try:
            return _record(self._api.read_namespaced_lease(
                name, namespace, _request_timeout=self.timeout))
        except ApiException as err:
            if err.status == 404:
                return None
            raise _unavailable("read", namespace, name, err) from err
        except Exception as err:
            raise _unavailable("read", namespace, name, err) from err

    def create(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        return self._write("create", namespace, name, record)

    def replace(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        return self._write("replace", namespace, name, record)

    def _write(self, verb: str, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace,
                                         resource_version=record.resource_version),
            spec=client.V1LeaseSpec(
                holder_identity=record.holder,
                lease_duration_seconds=record.lease_duration_seconds,
                acquire_time=record.acquire_time, renew_time=record.renew_time,
                lease_transitions=record.lease_transitions))
        try:
            if verb == "create":
                written = self._api.create_namespaced_lease(namespace, body,
                                                            _request_timeout=self.timeout)
            else:
                written = self._api.replace_namespaced_lease(name, namespace, body,
                                                             _request_timeout=self.timeout)
        except ApiException as err:
            if err.status == 409 or (err.status == 404 and verb == "replace"):
                raise LeaseConflict(f"Lease {namespace}/{name} changed since it was read "
                                    f"({err.status} on {verb})") from err
            raise _unavailable(verb, namespace, name, err) from err
        except Exception as err:
            raise _unavailable(verb, namespace, name, err) from err
        return _record(written)


def _unavailable(verb: str, namespace: str, name: str, err: Exception) -> LeaseUnavailable:
    if isinstance(err, ApiException):
        kind, why = f"http-{err.status}", f"HTTP {err.status} {err.reason}"
    else:
        kind, why = type(err).__name__, str(err) or repr(err)
    return LeaseUnavailable(f"cannot {verb} Lease {namespace}/{name}: {why}", kind)


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or None,
        lease_duration_seconds=spec.lease_duration_seconds,
        acquire_time=spec.acquire_time, renew_time=spec.renew_time,
        lease_transitions=spec.lease_transitions or 0,
        resource_version=lease.metadata.resource_version if lease.metadata else None)

