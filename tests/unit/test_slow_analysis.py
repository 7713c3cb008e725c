"""A slow metric source delays only the verdicts (issue 14, defect 5): a 12 s delay on
Prometheus used to stop every object write for the whole delay. The analyzer here blocks
until the test releases it: if a pass waited for it, the test would hang (and fail on
pytest's timeout) instead of reaching the assertions."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from controller.judging import AnalysisRequest
from controller.kube.annotations import STATE_ANNOTATION
from controller.kube.commands import submit_command
from controller.kube.fakes import FakeEvents, FakeObjects
from controller.policystore import PolicyStore
from controller.providers.presets import Part, Template
from controller.providers.prometheus import PrometheusProvider
from controller.reconciler import Reconciler
from controller.rollout.machine import Judgement
from controller.rollout.state import Command, Phase, RolloutState
from controller.routers import ROUTERS
from controller.settings import PrometheusSettings
from controller.telemetry import Telemetry
from tests.fakes import TEST_SEALER
from tests.unit.test_reconciler import T0, isvc, progressing_state, store

__all__ = ["store"]


class BlockedAnalyzer:
    """Judges "fail" for everything, once released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def judge(self, requests: Sequence[AnalysisRequest],
              now: datetime) -> Mapping[str, Judgement]:
        self.started.set()
        assert self.release.wait(60), "never released"
        return {r.key: Judgement("fail", "error rate 5% vs 0.5%") for r in requests}


def _state(isvcs: FakeObjects, name: str) -> RolloutState:
    return RolloutState.from_json(isvcs.objects[("models", name)]["metadata"]["annotations"][
        STATE_ANNOTATION])


def test_deploy_guards_and_rollbacks_go_on_while_analysis_hangs(store: PolicyStore) -> None:
    judged = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    aborted = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    aborted["metadata"].update(name="aborted")
    adopted = isvc("s3://m/v1", None)
    adopted["metadata"].update(name="deployed", uid="u-deployed")
    isvcs = FakeObjects(judged, aborted, adopted, commands_webhook=TEST_SEALER)
    analyzer = BlockedAnalyzer()
    clock = [T0 + timedelta(minutes=3)]
    reconciler = Reconciler(objects=isvcs, routers=ROUTERS, policies=store, analyzer=analyzer,
                            events=FakeEvents(), telemetry=Telemetry(), sealer=TEST_SEALER,
                            clock=lambda: clock[0], background=True)
    try:
        reconciler.run_once()                     # submits the analysis, does not wait
        assert analyzer.started.wait(30)
        # Meanwhile: a model deployed without the webhook, and an operator's abort.
        isvcs.objects[("models", "deployed")]["spec"]["predictor"]["model"]["storageUri"] = \
            "s3://m/v2"
        submit_command(isvcs, "models", "aborted", Command("c1", "abort", "ops", T0))
        clock[0] += timedelta(seconds=5)
        reconciler.run_once()
        deployed = isvcs.objects[("models", "deployed")]["spec"]["predictor"]
        assert deployed["canaryTrafficPercent"] == 10       # guarded at the first step
        assert _state(isvcs, "aborted").phase == Phase.ROLLING_BACK
        assert _state(isvcs, "churn").phase == Phase.PROGRESSING  # its verdict is not in yet
        analyzer.release.set()
        for _ in range(100):                       # the worker finishes; a later pass acts
            clock[0] += timedelta(seconds=1)
            reconciler.run_once()
            if _state(isvcs, "churn").phase == Phase.ROLLING_BACK:
                break
            threading.Event().wait(0.05)
        assert _state(isvcs, "churn").phase == Phase.ROLLING_BACK
        # The abort's rollout was judged too, but had moved on: that judgement was dropped.
        assert _state(isvcs, "aborted").ending == Phase.ABORTED
    finally:
        analyzer.release.set()
        reconciler.close()


def test_a_judgement_for_a_step_that_moved_on_is_dropped() -> None:
    state = progressing_state()
    from controller.judging import request_for
    from controller.policy.loader import load_files
    from tests.unit.test_reconciler import ROOT

    (policy,), _ = load_files([ROOT / "policies" / "fast.yaml"])
    request = request_for("models/churn", "models", "churn", state, policy.policy)
    assert request is not None and request.still_current(state)
    assert not request.still_current(state.evolve(step=1))
    assert not request.still_current(state.evolve(id="r2"))
    assert not request.still_current(state.evolve(phase=Phase.ROLLING_BACK))
    assert not request.still_current(None)


class _SlowPrometheus(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        self.release.wait(30)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def test_a_query_slower_than_its_deadline_is_a_query_error_not_data() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = PrometheusProvider(PrometheusSettings(
            url=f"http://127.0.0.1:{server.server_address[1]}"), timeout_seconds=0.3)
        template = Template('x{revision=~"${revision}"}', "revision", False)
        part = Part(group="0", namespace="models", service="churn", revisions=("a", "b"),
                    window_seconds=60, interval_seconds=30)
        result = provider.fetch(template, [part], T0)["0"]
        assert result.quality == "error" and "timed out" in result.detail.lower()
    finally:
        _SlowPrometheus.release.set()
        server.shutdown()
