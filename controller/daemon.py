"""``rollwise run``: wires settings, the Kubernetes client, the traffic routers, the policy
store, the analyzer, the reconciler, leader election, the HTTP servers and the scheduler.

I/O: this is the composition root. apscheduler drives the passes (one job, never
overlapping, coalesced) over the informer's cache (one LIST, then a watch); every change
the watch sees wakes it early, so that a deploy is guarded within a second, not a tick.
SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.analyzer import MetricAnalyzer
from controller.judging import Analyzer
from controller.kube import sealkey
from controller.kube.annotations import POLICY_ANNOTATION
from controller.kube.children import KubeChildren
from controller.kube.client import KubeObjects, api_client
from controller.kube.events import KubeEventRecorder
from controller.kube.informer import CachedObjects
from controller.kube.leases import KubeLeases
from controller.kube.webhook import review_response, stamp_commands
from controller.leader import AlwaysLeader, LeaderElector
from controller.lineage.mlmd import MLMDLineageStore
from controller.lineage.worker import GateFromLineage, LineageWorker
from controller.logs import configure_logging
from controller.notifications.interactions import MAX_BODY as SLACK_MAX_BODY
from controller.notifications.interactions import SlackInteractions
from controller.notifications.slack import SlackNotifier
from controller.notifications.socket_mode import SocketModeInteractions
from controller.policystore import PolicyStore
from controller.providers.prometheus import PrometheusProvider
from controller.reconciler import Reconciler, Source
from controller.rollout.snapshot import RolloutSnapshot
from controller.routers import ROUTERS
from controller.routers.deployment_gateway import CANARY_LABEL
from controller.server import HttpServer, LimitedRoute, Request, Response, Route
from controller.settings import Settings
from controller.telemetry import Telemetry

log = structlog.get_logger(__name__)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
JOB_ID = "reconcile"


@dataclass
class PassHealth:
    """Readiness of the leader: not ready after ``failures_allowed`` passes failed in a row
    (the API server is unreachable, say) or while one pass has been running for longer than
    ``stuck_after`` seconds, so that a controller that keeps failing is seen as such by
    Kubernetes and by its alerts, instead of answering 200 forever."""

    stuck_after: float
    failures_allowed: int = 3
    failures: int = 0
    last_error: str = ""
    running_since: float | None = None

    def started(self, now: float) -> None:
        self.running_since = now

    def finished(self, error: str | None) -> None:
        self.running_since = None
        if error is None:
            self.failures, self.last_error = 0, ""
        else:
            self.failures, self.last_error = self.failures + 1, error

    def problem(self, now: float) -> str | None:
        if self.failures >= self.failures_allowed:
            return f"the last {self.failures} reconcile passes failed: {self.last_error}"
        if self.running_since is not None and now - self.running_since > self.stuck_after:
            return f"a reconcile pass has been running for {now - self.running_since:.0f}s"
        return None


def _review(request: Request,
            answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    """An AdmissionReview in, its answer out (400 for a body that is not one)."""
    try:
        review = json.loads(request.body)
    except ValueError:
        return Response(400, b"not JSON\n")
    if not isinstance(review, dict):
        return Response(400, b"not an AdmissionReview\n")
    return Response.json(200, answer(review))


def _rollwise_object(obj: Mapping[str, Any]) -> bool:
    """An object that opted in (``rollwise.io/policy``) or one Rollwise made (its canary)."""
    meta = obj.get("metadata") or {}
    return (POLICY_ANNOTATION in (meta.get("annotations") or {})
            or (meta.get("labels") or {}).get(CANARY_LABEL) == "true")


def _pod_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


class Daemon:
    def __init__(self, settings: Settings, analyzer: Analyzer | None = None) -> None:
        self.settings = settings
        self.telemetry = Telemetry()
        if analyzer is None:
            # A query must answer within a tick (at most the configured timeout, at least 1s):
            # a slower answer is a query error, i.e. missing data, and holds nothing up.
            deadline = min(settings.prometheus.timeout_seconds,
                           max(1.0, 0.8 * settings.tick_seconds))
            analyzer = MetricAnalyzer(PrometheusProvider(settings.prometheus,
                                                         timeout_seconds=deadline),
                                      on_unusable=lambda quality: self.telemetry.query_errors
                                      .labels(str(quality)).inc())
        self.stop = threading.Event()
        self.exit_code = 0
        identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.api = api_client(settings.kubernetes, identity)
        self.policies = PolicyStore(settings.policy_dir)
        # One client per resource the routers drive (InferenceServices, Deployments); each
        # object goes to the first router of its kind that supports it.
        self.routers = ROUTERS
        resources = list(dict.fromkeys(router.resource for router in self.routers))

        def api_error(verb: str) -> None:
            self.telemetry.api_errors.labels(verb).inc()

        # Per resource, one LIST, then a watch: passes read the informers' caches, never
        # the API server.
        self.watched = [CachedObjects(KubeObjects(self.api, resource,
                                                  settings.kubernetes.namespaces,
                                                  on_api_error=api_error), self.api)
                        for resource in resources]
        self.objects = self.watched[0]
        self.sources = [Source(objects, KubeEventRecorder(self.api, objects.resource,
                                                          on_error=api_error))
                        for objects in self.watched[1:]]
        if settings.leader_election.enabled:
            self.leader: LeaderElector | AlwaysLeader = LeaderElector(
                KubeLeases(self.api, settings.leader_election), settings.leader_election,
                settings.leader_election.lease_namespace or _pod_namespace(), identity,
                on_error=lambda kind: self.telemetry.api_errors.labels("lease").inc(),
                # Leading again after a gap: what this process knew may be stale.
                on_started=lambda: self.reconciler.reset())
        else:
            self.leader = AlwaysLeader()
        seal = settings.seal
        self.sealer = (sealkey.from_file(seal.key_file) if seal.key_file is not None else
                       sealkey.from_secret(self.api, seal.secret_namespace or _pod_namespace(),
                                           seal.secret_name))
        observers, slack_routes = self._slack()
        # Lineage: writes go through a background worker (an MLMD outage never delays a
        # decision; snapshots are caught up when it returns); the gate reads through its
        # own connection so that a slow write never holds the lock a gate read needs.
        self.lineage = LineageWorker(MLMDLineageStore(settings.mlmd), self.telemetry.registry)
        observers.append(self.lineage.submit)
        gates = GateFromLineage(MLMDLineageStore(settings.mlmd, read_only=True))
        self.reconciler = Reconciler(
            objects=self.objects, routers=self.routers, policies=self.policies,
            analyzer=analyzer,
            events=KubeEventRecorder(self.api, self.objects.resource, on_error=api_error),
            telemetry=self.telemetry, sealer=self.sealer, is_leader=self.leader.is_leader,
            clock=lambda: datetime.now().astimezone(), observers=observers, gates=gates,
            background=True, look_every=timedelta(seconds=settings.tick_seconds),
            extra=self.sources, children=KubeChildren(self.api, on_api_error=api_error))
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.pass_health = PassHealth(stuck_after=max(60.0, 10 * settings.tick_seconds))
        # Three faces, three listeners: health and metrics (kubelet, Prometheus), Slack
        # interactivity (the only one an Ingress reaches), the admission webhook (TLS, the
        # API server). A path rule in an Ingress can then never expose /metrics.
        def refused(face: str) -> Callable[[str], None]:
            return lambda reason: self.telemetry.http_refused.labels(face, reason).inc()

        self.http = HttpServer(settings.listen_address, {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
        }, on_error=refused("health"))
        self.slack_http = (HttpServer(settings.slack.listen_address, slack_routes,
                                      on_error=refused("slack")) if slack_routes else None)
        self.webhook: HttpServer | None = None
        if settings.webhook.cert_file is not None:
            self.webhook = HttpServer(settings.webhook.listen_address,
                                      {("POST", "/mutate"): self._mutate,
                                       ("POST", "/commands"): self._stamp_commands},
                                      settings.webhook.cert_file, settings.webhook.key_file,
                                      on_error=refused("webhook"))

    def _slack(self) -> tuple[list[Callable[[RolloutSnapshot], None]], dict[
            tuple[str, str], Route]]:
        """Slack notifications (leader only: they follow committed transitions) and
        interactivity (any replica: a click only writes a command annotation)."""
        slack = self.settings.slack
        observers: list[Callable[[RolloutSnapshot], None]] = []
        notifier = SlackNotifier.from_settings(slack, self.policies.get, self.telemetry.registry,
                                               isvcs=self.objects, sealer=self.sealer)
        if notifier is not None:
            observers.append(notifier)
        routes: dict[tuple[str, str], Route] = {}
        interactions = SlackInteractions.from_settings(
            slack, self.policies.get, self.objects, sealer=self.sealer, team_id=slack.team_id,
            response_urls=tuple(slack.response_url_prefixes))
        self.socket_mode: SocketModeInteractions | None = None
        if interactions is not None:
            routes[("POST", "/slack/interactions")] = LimitedRoute(interactions.handle,
                                                                   SLACK_MAX_BODY)
            self.socket_mode = SocketModeInteractions.from_settings(slack, interactions)
        return observers, routes

    # -- routes -------------------------------------------------------------------------

    def _healthz(self, _: Request) -> Response:
        return Response(200, b"ok\n")

    def _readyz(self, _: Request) -> Response:
        if not self.policies.names() and self.policies.problems:
            return Response(503, b"no valid policy loaded\n")
        problem = self.pass_health.problem(time.monotonic()) if self.leader.is_leader() else None
        if problem is not None:
            return Response(503, f"{problem}\n".encode())
        return Response(200, b"ready\n")

    def _metrics(self, _: Request) -> Response:
        self.telemetry.leader.set(1 if self.leader.is_leader() else 0)
        return Response(200, generate_latest(self.telemetry.registry), CONTENT_TYPE_LATEST)

    def _mutate(self, request: Request) -> Response:
        return _review(request, lambda review: review_response(review, self.policies.get,
                                                               self.routers))

    def _stamp_commands(self, request: Request) -> Response:
        return _review(request, lambda review: stamp_commands(review, self.sealer))

    # -- lifecycle ----------------------------------------------------------------------

    def _pass(self) -> None:
        if not self.leader.is_leader():
            return
        self.pass_health.started(time.monotonic())
        try:
            self.reconciler.run_once()
        except Exception as err:
            self.telemetry.pass_failures.inc()
            self.pass_health.finished(f"{type(err).__name__}: {err}")
            log.error("reconcile pass failed", error=str(err))
        else:
            self.pass_health.finished(None)

    def _reload_policies(self) -> None:
        reload = self.policies.reload()
        if reload.changed:
            self.telemetry.policy_problems.set(len(reload.problems))

    def wake(self) -> None:
        """Run a pass now (a watch saw a change); coalesces with a pending run."""
        job = self.scheduler.get_job(JOB_ID)
        if job is not None:
            job.modify(next_run_time=datetime.now().astimezone())

    def run(self) -> int:
        reload = self.policies.reload()
        self.telemetry.policy_problems.set(len(reload.problems))
        log.info("starting", policies=self.policies.names(), leader_election=self.settings
                 .leader_election.enabled, namespaces=self.settings.kubernetes.namespaces or "all")
        for server in self._servers():
            server.start()
        self.leader.start()
        self.lineage.start()
        if self.socket_mode is not None:
            self.socket_mode.start()
        self.scheduler.add_job(self._pass, "interval", seconds=self.settings.tick_seconds,
                               id=JOB_ID, max_instances=1, coalesce=True,
                               next_run_time=datetime.now().astimezone())
        # Every replica reloads policies, not only the leader: followers answer admission
        # webhook calls too, and must not answer from a stale policy.
        self.scheduler.add_job(self._reload_policies, "interval",
                               seconds=self.settings.tick_seconds, id="reload-policies",
                               max_instances=1, coalesce=True)
        self.scheduler.start()
        self.objects.watch_forever(self.wake, self.stop)
        for objects in self.watched[1:]:
            # Most Deployments are nobody's rollout: only the opted-in ones and Rollwise's
            # canaries wake a pass (the tick reads the rest anyway).
            objects.watch_forever(self.wake, self.stop, relevant=_rollwise_object)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        self.stop.wait()
        log.info("stopping")
        self.scheduler.shutdown(wait=True)
        self.reconciler.close()
        self.leader.release()
        self.lineage.stop()
        for server in self._servers():
            server.stop()
        return self.exit_code

    def _servers(self) -> list[HttpServer]:
        return [s for s in (self.http, self.slack_http, self.webhook) if s is not None]

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()


def run(settings: Settings) -> int:
    configure_logging(settings.log_format, settings.log_level)
    return Daemon(settings).run()
