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
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from controller.settings import LeaderElectionSettings

log = structlog.get_logger(__name__)


class LeaderElector:
    def __init__(self, api: client.ApiClient, settings: LeaderElectionSettings, namespace: str,
                 identity: str, on_lost: Callable[[], None]) -> None:
        self._leading = threading.Event()
        self._on_lost = on_lost
        self.identity = identity
        lock = LeaseLock(settings.lease_name, namespace, identity)
        lock.api_instance = client.CoordinationV1Api(api)  # not the global default client
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
        log.error("lost the leader lease", identity=self.identity)
        if was_leading:
            self._on_lost()


class AlwaysLeader:
    """Leader election switched off (a single replica, or tests)."""

    def start(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    def wait(self, timeout: float) -> bool:
        return True
