"""``rollwise run``: wires settings, the Kubernetes client, the policy store, the
analyzer, the reconciler, leader election, the HTTP servers and the scheduler.

I/O: this is the composition root. apscheduler drives the passes (one job, never
overlapping, coalesced); InferenceService watches wake it early so that a deploy is
guarded within a second, not a tick. SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller import kube
from controller.analyzer import MetricAnalyzer
from controller.events import KubeEventRecorder
from controller.leader import AlwaysLeader, KubeLeases, LeaderElector
from controller.lineage.mlmd import MLMDLineageStore
from controller.lineage.worker import GateFromLineage, LineageWorker
from controller.logs import configure_logging
from controller.notifications.interactions import SlackInteractions
from controller.notifications.slack import SlackNotifier
from controller.notifications.socket_mode import SocketModeInteractions
from controller.policystore import PolicyStore
from controller.providers.prometheus import PrometheusProvider
from controller.reconciler import Analyzer, Reconciler
from controller.rollout.snapshot import RolloutSnapshot
from controller.server import HttpServer, Request, Response, Route
from controller.settings import Settings
from controller.telemetry import Telemetry
from controller.traffic.client import KubeInferenceServices
from controller.webhook import review_response

log = structlog.get_logger(__name__)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
JOB_ID = "reconcile"


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
            analyzer = MetricAnalyzer(PrometheusProvider(settings.prometheus),
                                      on_unusable=lambda quality: self.telemetry.query_errors
                                      .labels(str(quality)).inc())
        self.stop = threading.Event()
        self.exit_code = 0
        identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.api = kube.api_client(settings.kubernetes, identity)
        self.policies = PolicyStore(settings.policy_dir)
        self.isvcs = KubeInferenceServices(
            self.api, settings.kubernetes.namespaces,
            on_api_error=lambda verb: self.telemetry.api_errors.labels(verb).inc())
        if settings.leader_election.enabled:
            self.leader: LeaderElector | AlwaysLeader = LeaderElector(
                KubeLeases(self.api, settings.leader_election), settings.leader_election,
                settings.leader_election.lease_namespace or _pod_namespace(), identity,
                on_error=lambda kind: self.telemetry.api_errors.labels("lease").inc())
        else:
            self.leader = AlwaysLeader()
        observers, slack_routes = self._slack()
        # Lineage: writes go through a background worker (an MLMD outage never delays a
        # decision; snapshots are caught up when it returns); the gate reads through its
        # own connection so that a slow write never holds the lock a gate read needs.
        self.lineage = LineageWorker(MLMDLineageStore(settings.mlmd), self.telemetry.registry)
        observers.append(self.lineage.submit)
        gates = GateFromLineage(MLMDLineageStore(settings.mlmd, read_only=True))
        self.reconciler = Reconciler(
            isvcs=self.isvcs, policies=self.policies, analyzer=analyzer,
            events=KubeEventRecorder(self.api, on_error=lambda verb:
                                     self.telemetry.api_errors.labels(verb).inc()),
            telemetry=self.telemetry, is_leader=self.leader.is_leader,
            clock=lambda: datetime.now().astimezone(), observers=observers, gates=gates)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._last_pass_ok = threading.Event()
        self.http = HttpServer(settings.listen_address, {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            **slack_routes,
        })
        self.webhook: HttpServer | None = None
        if settings.webhook.cert_file is not None:
            self.webhook = HttpServer(settings.webhook.listen_address,
                                      {("POST", "/mutate"): self._mutate},
                                      settings.webhook.cert_file, settings.webhook.key_file)

    def _slack(self) -> tuple[list[Callable[[RolloutSnapshot], None]], dict[
            tuple[str, str], Route]]:
        """Slack notifications (leader only: they follow committed transitions) and
        interactivity (any replica: a click only writes a command annotation)."""
        slack = self.settings.slack
        observers: list[Callable[[RolloutSnapshot], None]] = []
        notifier = SlackNotifier.from_settings(slack, self.policies.get, self.telemetry.registry,
                                               isvcs=self.isvcs)
        if notifier is not None:
            observers.append(notifier)
        routes: dict[tuple[str, str], Route] = {}
        interactions = SlackInteractions.from_settings(
            slack, self.policies.get, self.isvcs, team_id=slack.team_id,
            response_urls=tuple(slack.response_url_prefixes))
        self.socket_mode: SocketModeInteractions | None = None
        if interactions is not None:
            routes[("POST", "/slack/interactions")] = interactions.handle
            self.socket_mode = SocketModeInteractions.from_settings(slack, interactions)
        return observers, routes

    # -- routes -------------------------------------------------------------------------

    def _healthz(self, _: Request) -> Response:
        return Response(200, b"ok\n")

    def _readyz(self, _: Request) -> Response:
        if not self.policies.names() and self.policies.problems:
            return Response(503, b"no valid policy loaded\n")
        return Response(200, b"ready\n")

    def _metrics(self, _: Request) -> Response:
        self.telemetry.leader.set(1 if self.leader.is_leader() else 0)
        return Response(200, generate_latest(self.telemetry.registry), CONTENT_TYPE_LATEST)

    def _mutate(self, request: Request) -> Response:
        import json

        try:
            review = json.loads(request.body)
        except ValueError:
            return Response(400, b"not JSON\n")
        return Response.json(200, review_response(review, self.policies.get))

    # -- lifecycle ----------------------------------------------------------------------

    def _pass(self) -> None:
        if not self.leader.is_leader():
            return
        try:
            self.reconciler.run_once()
            self._last_pass_ok.set()
        except Exception as err:
            self.telemetry.api_errors.labels("pass").inc()
            log.error("reconcile pass failed", error=str(err))

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
        self.http.start()
        if self.webhook is not None:
            self.webhook.start()
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
        self.isvcs.watch_forever(self.wake, self.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        self.stop.wait()
        log.info("stopping")
        self.scheduler.shutdown(wait=True)
        self.leader.release()
        self.lineage.stop()
        self.http.stop()
        if self.webhook is not None:
            self.webhook.stop()
        return self.exit_code

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()


def run(settings: Settings) -> int:
    configure_logging(settings.log_format, settings.log_level)
    return Daemon(settings).run()
