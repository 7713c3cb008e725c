"""Leader election on a coordination.k8s.io Lease, with the official client's
``leaderelection`` module. I/O.

Only the leader reconciles; every write is also fenced by resourceVersion, so a deposed
leader that has not noticed yet fails with 409 instead of acting twice. Losing the lease
ends the process (as controller-runtime does): Kubernetes restarts it as a follower.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from controller.settings import LeaderElectionSettings

log = structlog.get_logger(__name__)


class _ReleasableLeaseLock(LeaseLock):
    """The library's Lease lock, which can be told to stop writing: once released, the
    library's renew loop can no longer take the Lease back."""

    released = False

    def create(self, name: str, namespace: str, election_record: object) -> bool:
        if self.released:
            return False
        return bool(super().create(name, namespace, election_record))  # type: ignore[no-untyped-call]

    def update(self, name: str, namespace: str, updated_record: object) -> bool:
        if self.released:
            return False
        return bool(super().update(name, namespace, updated_record))  # type: ignore[no-untyped-call]


class LeaderElector:
    def __init__(self, api: client.ApiClient, settings: LeaderElectionSettings, namespace: str,
                 identity: str, on_lost: Callable[[], None]) -> None:
        self._leading = threading.Event()
        self._on_lost = on_lost
        self._releasing = False
        self.identity = identity
        self._leases = client.CoordinationV1Api(api)  # not the global default client
        self._lock = lock = _ReleasableLeaseLock(  # type: ignore[no-untyped-call]
            settings.lease_name, namespace, identity)
        lock.api_instance = self._leases
        self._config = electionconfig.Config(
            lock, lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.renew_deadline_seconds,
            retry_period=settings.retry_period_seconds,
            onstarted_leading=self._started, onstopped_leading=self._stopped)
        self._thread = threading.Thread(target=self._run, daemon=True, name="leader-election")

    def start(self) -> None:
        self._thread.start()

    def is_leader(self) -> bool:
        return self._leading.is_set()

    def wait(self, timeout: float) -> bool:
        return self._leading.wait(timeout)

    def _run(self) -> None:
        leaderelection.LeaderElection(self._config).run()

    def _started(self) -> None:
        log.info("became leader", identity=self.identity)
        self._leading.set()

    def _stopped(self) -> None:
        was_leading = self._leading.is_set()
        self._leading.clear()
        if self._releasing:
            return
        log.error("lost the leader lease", identity=self.identity)
        if was_leading:
            self._on_lost()

    def release(self) -> None:
        """On a clean shutdown, give the Lease up so that a follower takes over at its next
        retry rather than after a whole lease duration (what an upgrade would cost)."""
        self._releasing = True
        self._lock.released = True
        was_leading = self._leading.is_set()
        self._leading.clear()
        if not was_leading:
            return
        name, namespace = self._lock.name, self._lock.namespace
        try:
            lease = self._leases.read_namespaced_lease(name, namespace, _request_timeout=5)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            self._leases.replace_namespaced_lease(name, namespace, lease, _request_timeout=5)
            log.info("released the leader lease", identity=self.identity)
        except ApiException as err:  # the lease then simply expires
            log.warning("could not release the leader lease", status=err.status)


class AlwaysLeader:
    """Leader election switched off (a single replica, or tests)."""

    def start(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    def wait(self, timeout: float) -> bool:
        return True

    def release(self) -> None:
        return None
