"""Fault chaos: Prometheus failing in every way, MLMD down, bad annotations beside a rollout.

Issue 14's chaos suite, bullets 3 and 5. One world (real kube-apiserver and Prometheus,
simulated KServe); each test runs the real controller process against it.

1. ``test_prometheus_faults_...``: the controller queries Prometheus through a fault proxy
   (``simulations.faults.FaultProxy``). One good rollout, at the step being analysed, goes
   through every fault mode in turn (refuse, error, nan, garbage, slow): while a fault
   lasts no step passes and no traffic moves; the rollout holds (a ``MetricsMissing``
   Event) and then pauses (``onMissingData: pause``), each naming the cause; the
   controller's query error counter grows. Under ``slow`` a deploy on another object is
   taken up and its abort carried out within seconds (the pass never waits on a query).
   Each fault is cleared and the pause resumed (``rollwise resume``: the policy's
   ``pause`` action waits for a human); at the end the rollout is promoted.
2. ``test_mlmd_down_and_bad_annotations_...``: lineage on a wedged MLMD (a blackhole that
   accepts connections and never answers, the worst way down: every call runs into its
   deadline), and, on four objects in the same namespace, what issue 14 found harmful: a
   sealed state at ``step: 99``, a state that is not JSON, 2,000 commands, a forged
   ``rollwise.io/last-good-predictor``. Meanwhile a rollout without a gate is promoted and
   deploys are taken up within seconds (the pass does not wait on lineage); a model whose
   policy requires the pre-rollout gate stays Pending at 0% for as long as the gate cannot
   be asked (never promoted, never blocked on a guess) and says why (a GateWaiting Warning
   Event and its status); lineage write errors are counted;
   each bad object gets a Warning Event naming the problem, nothing forged is ever
   written, the controller never crashes and ``/readyz`` stays 200 (per-object problems
   do not fail the pass: docs/architecture.md, "Failure handling").

The figures (faults injected, seconds each, pauses seen, query errors counted, outcomes)
are printed. Under three minutes on 2 cores, the world's start included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import requests
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from controller.cli import main
from controller.kube import sealkey
from controller.kube.annotations import (
    COMMANDS_ANNOTATION,
    LAST_GOOD_ANNOTATION,
    SEAL_STATE,
    STATE_ANNOTATION,
)
from controller.rollout.state import Phase, RolloutState
from simulations.controller_process import ControllerProcess
from simulations.faults import FAULTS, Blackhole, FaultProxy
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import (
    ERRORS,
    GOOD,
    NAMESPACE,
    deploy,
    deploy_and_adopt,
    finished,
    state_of,
    wait_for,
    write_policy,
)
from tests.simulations.test_faults import CAUSES

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(420)]

MISSING_AFTER = 3          # seconds of missing data before the rollout pauses (test 1)
SLOW_SECONDS = 3.0         # the slow fault's delay: longer than the query deadline (1 s)
TAKEN_UP_WITHIN = 8.0      # seconds to take up a deploy while queries or lineage hang (a
                           # wedged MLMD used to hold every pass for 10 s)
FORGED_URI = "s3://attacker/model"
FORGED_ACCOUNT = "cluster-admin-sa"
BROKEN = replace(ERRORS, error_rate=0.5)
MODELS = {"s3://m/forged/v2": BROKEN}


# The e2e policy made short: one analysed step (50%, the one that must be certified before
# promotion), one check whose guard (10%) a good model (1% errors) is quickly shown to be
# under and a broken one (50%) quickly shown to be over, and onFailure.restorePreviousSpec
# (for the forged spec).
POLICY_TEXT = """\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: e2e}
spec:
  steps: [{weight: 50}, {weight: 100}]
  stepDefaults: {minDuration: 6s, minRequests: 100}
  readyTimeout: 20s
  analysis:
    interval: 3s
    warmup: {duration: 6s}
    alpha: 0.05
    checks: [{name: error-rate, kind: ratio, tolerance: 0.5, maxRate: 0.1}]
  onInconclusive: {deadline: 150s, action: pause}
  onMissingData: {after: 15s, action: pause}
  onFailure: {restorePreviousSpec: true}
"""


def _policy(**changes: str) -> str:
    text = POLICY_TEXT
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def world(kube_binaries: Binaries) -> Iterator[World]:
    with World(WorldConfig(models=MODELS, default_behaviour=GOOD, ready_delay=1.0, seed=21),
               binaries=kube_binaries) as running:
        yield running


def _cli(world: World, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--kubeconfig",
                                       str(world.cluster.admin_kubeconfig)])
    assert result.exit_code == 0, result.output
    return result.output


def _metric(text: str, prefix: str) -> float:
    """The sum of the samples whose line starts with ``prefix`` (name and labels)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


QUERY_ERRORS = 'rollwise_metric_query_errors_total{quality="error"}'


def _events(world: World, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the object's Events, oldest first."""
    events = kubernetes.client.CoreV1Api(world.admin).list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message or "")
            for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)]


def _canary(world: World, name: str) -> Any:
    return world.get_isvc(NAMESPACE, name)["spec"]["predictor"].get("canaryTrafficPercent")


def _tracebacks(controller: ControllerProcess) -> int:
    return controller.log_file.read_text(errors="replace").count("Traceback")


# --- 1. Prometheus faults ------------------------------------------------------------------


def _resume_until_finished(world: World, name: str, controller: ControllerProcess,
                           timeout: float) -> RolloutState:
    """Wait for the rollout to finish, resuming a missing-data pause left over from a
    judgement computed while the last fault lasted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = state_of(world, name)
        if state is not None and state.phase.terminal:
            return state
        if state is not None and state.pause is not None and (
                state.pause.reason == "missing-data"):
            _cli(world, "resume", f"{NAMESPACE}/{name}")
        time.sleep(1.0)
    raise AssertionError(f"{name} not finished in {timeout:.0f} s\n{controller.tail()}")


def test_prometheus_faults_hold_and_pause_naming_the_cause_then_the_rollout_is_promoted(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = write_policy(tmp_path / "policies", _policy(**{
        "onMissingData: {after: 15s, action: pause}":
            f"onMissingData: {{after: {MISSING_AFTER}s, action: pause}}"}))
    started = time.monotonic()
    figures: list[str] = []
    with FaultProxy(world.prometheus.url, slow_seconds=SLOW_SECONDS, max_seconds=300) as proxy, \
            ControllerProcess(world, policies, tmp_path / "controller.log",
                              env={"ROLLWISE_PROMETHEUS__URL": proxy.url}) as controller:
        for name in ("faulted", "bystander"):
            deploy_and_adopt(world, name, f"s3://m/{name}/v1")
        traffic = world.start_traffic(NAMESPACE, "faulted", 150, max_seconds=240)
        deploy(world, "faulted", "s3://m/faulted/v2")
        # A step being analysed: past its warm-up, with verdicts coming in.
        wait_for(lambda: (s := state_of(world, "faulted")) is not None
                 and s.storage_uri == "s3://m/faulted/v2" and s.phase == Phase.PROGRESSING
                 and s.last_verdict.startswith("continue") and "waiting" not in s.last_verdict,
                 60, "the rollout to be analysed", controller.tail)
        for mode in FAULTS:
            errors_before = _metric(controller.metrics(), QUERY_ERRORS)
            fault_started = time.monotonic()
            proxy.set_mode(mode)
            held = wait_for(lambda: (s := state_of(world, "faulted")) is not None
                            and s.missing_since is not None and s, 60,
                            f"a hold under {mode}", controller.tail)
            # From the first missing look on, every look is under the fault: nothing moves.
            at_hold = (held.step, _canary(world, "faulted"), len(held.verdicts))
            if mode == "slow":
                figures += _bystander_under_slow(world, controller)
            paused = wait_for(lambda: (s := state_of(world, "faulted")) is not None
                              and s.phase == Phase.PAUSED and s, 60,
                              f"the pause under {mode}", controller.tail)
            assert paused.pause is not None and paused.pause.reason == "missing-data"
            assert CAUSES[mode] in paused.pause.message, (mode, paused.pause.message)
            assert (paused.step, _canary(world, "faulted"), len(paused.verdicts)) == at_hold, (
                f"something moved under {mode}")
            errors = _metric(controller.metrics(), QUERY_ERRORS) - errors_before
            assert errors > 0, f"no query error counted under {mode}"
            proxy.set_mode("pass")
            figures.append(f"{mode}: {time.monotonic() - fault_started:.1f} s to the pause "
                           f"at {at_hold[1]}%, {errors:.0f} query errors")
            _cli(world, "resume", f"{NAMESPACE}/faulted")
            wait_for(lambda: (s := state_of(world, "faulted")) is not None
                     and s.phase == Phase.PROGRESSING, 30, f"the resume after {mode}",
                     controller.tail)
        cleared = time.monotonic()
        done = _resume_until_finished(world, "faulted", controller, 120)
        figures.append(f"promoted {time.monotonic() - cleared:.1f} s after the last fault")
        metrics = controller.metrics()
        traffic.stop()
        tracebacks = _tracebacks(controller)
    events = _events(world, "faulted")
    holds = [m for _, r, m in events if r == "MetricsMissing"]
    pauses = [m for _, r, m in events if r == "Paused"]
    with capsys.disabled():
        print(f"\nPrometheus fault chaos: {sum(proxy.injected[m] for m in FAULTS)} faulty "
              f"answers {dict(proxy.injected)}, seconds per mode "
              f"{ {m: round(proxy.seconds[m], 1) for m in FAULTS} }; "
              + "; ".join(figures)
              + f"; {len(holds)} MetricsMissing and {len(pauses)} Paused Events on 'faulted'; "
              f"{_metric(metrics, 'rollwise_metric_query_errors_total'):.0f} query errors in "
              f"all; outcome {done.phase}; {tracebacks} tracebacks; "
              f"{time.monotonic() - started:.1f} s")
    assert done.phase == Phase.SUCCEEDED, done.last_decision
    assert [(v.step, v.outcome) for v in done.verdicts] == [(0, "pass")]
    for mode in FAULTS:
        assert any(CAUSES[mode] in m for m in holds), f"no hold Event names {mode}: {holds}"
        assert any(CAUSES[mode] in m for m in pauses), f"no pause Event names {mode}: {pauses}"
    assert tracebacks == 0


def _bystander_under_slow(world: World, controller: ControllerProcess) -> list[str]:
    """While every query hangs: a deploy on another object is taken up (its rollout state
    written) and an abort of it is carried out, each within TAKEN_UP_WITHIN seconds."""
    deployed = time.monotonic()
    deploy(world, "bystander", "s3://m/bystander/v2")
    wait_for(lambda: (s := state_of(world, "bystander")) is not None
             and s.storage_uri == "s3://m/bystander/v2", TAKEN_UP_WITHIN,
             "the controller to take up a deploy while queries hang", controller.tail)
    taken_up = time.monotonic() - deployed
    aborted_at = time.monotonic()
    _cli(world, "abort", f"{NAMESPACE}/bystander", "--reason", "chaos")
    state = wait_for(lambda: finished(world, "bystander", "s3://m/bystander/v2"),
                     TAKEN_UP_WITHIN, "the abort to be carried out while queries hang",
                     controller.tail)
    assert state.phase == Phase.ABORTED
    assert _canary(world, "bystander") == 0
    return [f"under slow, another object's deploy taken up in {taken_up:.1f} s and its "
            f"abort done in {time.monotonic() - aborted_at:.1f} s"]


# --- 2 and 3. MLMD down, and bad annotations beside a healthy rollout ---------------------

GATED_POLICY = _policy(**{"metadata: {name: e2e}": "metadata: {name: gated}"}) + (
    "  gates:\n    preRollout:\n      metrics: [{name: accuracy, min: 0.9}]\n")
BAD = ("step99", "notjson", "flooded", "forged")


def _flood(world: World, controller: ControllerProcess, uid: str) -> str:
    """2,000 commands on ``flooded``: refused by the commands webhook (the API server says
    why); then written while the webhook is not registered (a cluster where it is missing),
    so that the controller has to cope with them. Returns the webhook's refusal."""
    entries = [{"id": f"flood-{i}", "action": "pause", "by": "mallory",
                "at": "2026-01-01T00:00:00+00:00"} for i in range(2000)]
    patch = {"metadata": {"annotations": {COMMANDS_ANNOTATION: json.dumps(entries)}}}
    with pytest.raises(ApiException) as refused:
        world.patch_isvc(NAMESPACE, "flooded", patch)
    admission = kubernetes.client.AdmissionregistrationV1Api(world.admin)
    admission.delete_mutating_webhook_configuration("rollwise")
    try:
        written = world.patch_isvc(NAMESPACE, "flooded", patch)
        assert written["metadata"]["uid"] == uid
    finally:
        _, _, ca = world.webhook_certificate()
        world.register_webhook(f"https://127.0.0.1:{controller.webhook_port}", ca)
    return str(refused.value.body)


def _corrupt(world: World, controller: ControllerProcess) -> dict[str, str]:
    """What issue 14 found harmful, one kind per object; the uid of each."""
    sealer = sealkey.from_secret(world.admin, world.cluster.controller_namespace,
                                 "rollwise-seal")
    uids = {n: str(world.get_isvc(NAMESPACE, n)["metadata"]["uid"]) for n in BAD}
    step99 = state_of(world, "step99")
    assert step99 is not None
    # A state sealed with the controller's own key (as a buggy version would write it):
    # the seal verifies, the step does not fit the policy.
    world.patch_isvc(NAMESPACE, "step99", {"metadata": {"annotations": {
        STATE_ANNOTATION: sealer.seal_text(SEAL_STATE, uids["step99"],
                                           step99.evolve(step=99).to_mapping())}}})
    world.patch_isvc(NAMESPACE, "notjson", {"metadata": {"annotations": {
        STATE_ANNOTATION: '{"phase": "Succeeded", "step": '}}})
    # The recorded good spec, edited: another model and a privileged service account,
    # the seal kept.
    forged = json.loads(world.get_isvc(NAMESPACE, "forged")["metadata"]["annotations"][
        LAST_GOOD_ANNOTATION])
    forged["predictor"]["model"]["storageUri"] = FORGED_URI
    forged["predictor"]["serviceAccountName"] = FORGED_ACCOUNT
    world.patch_isvc(NAMESPACE, "forged", {"metadata": {"annotations": {
        LAST_GOOD_ANNOTATION: json.dumps(forged)}}})
    refusal = _flood(world, controller, uids["flooded"])
    assert "at most 20" in refusal, refusal
    return uids


def _forged_in_spec(world: World) -> bool:
    spec = json.dumps(world.get_isvc(NAMESPACE, "forged")["spec"])
    return FORGED_URI in spec or FORGED_ACCOUNT in spec


def test_mlmd_down_and_bad_annotations_beside_a_healthy_rollout(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    policies = write_policy(tmp_path / "policies", _policy())
    write_policy(policies, GATED_POLICY, name="gated")
    readyz: list[int] = []
    # MLMD's gRPC service wedged: it accepts connections and never answers, so every
    # lineage call, the gate's read included, runs into its deadline.
    with Blackhole(max_seconds=300) as mlmd, ControllerProcess(
            world, policies, tmp_path / "controller.log",
            env={"ROLLWISE_MLMD__BACKEND": "grpc", "ROLLWISE_MLMD__GRPC_HOST": "127.0.0.1",
                 "ROLLWISE_MLMD__GRPC_PORT": str(mlmd.port)}) as controller:
        names = {"steady": "e2e", "gated": "gated"} | dict.fromkeys(BAD, "e2e")
        for name, policy in names.items():
            world.create_isvc(NAMESPACE, name, f"s3://m/{name}/v1", policy=policy)
        for name in names:
            wait_for(lambda name=name: (s := state_of(world, name)) is not None
                     and s.phase == Phase.SUCCEEDED, 60, f"{name} adopted", controller.tail)
        _corrupt(world, controller)
        traffic = [world.start_traffic(NAMESPACE, n, 120, max_seconds=180)
                   for n in ("steady", "forged", "gated")]
        # The gated model first: its rollout waits on the gate, asked at every pass.
        deploy(world, "gated", "s3://m/gated/v2")
        wait_for(lambda: (s := state_of(world, "gated")) is not None
                 and s.storage_uri == "s3://m/gated/v2", TAKEN_UP_WITHIN, "gated's rollout",
                 controller.tail)
        time.sleep(1)
        deployed = time.monotonic()
        for name in ("steady", "forged"):
            deploy(world, name, f"s3://m/{name}/v2")
        for name in ("steady", "forged"):   # the pass does not wait on lineage
            wait_for(lambda name=name: (s := state_of(world, name)) is not None
                     and s.storage_uri == f"s3://m/{name}/v2", TAKEN_UP_WITHIN,
                     f"the controller to take up {name}'s deploy while MLMD hangs",
                     controller.tail)
        taken_up = time.monotonic() - deployed
        gated_canary: set[Any] = set()
        forged_seen = False

        def settled() -> bool:
            nonlocal forged_seen
            readyz.append(requests.get(f"{controller.url}/readyz", timeout=5).status_code)
            gated_canary.add(_canary(world, "gated"))
            forged_seen = forged_seen or _forged_in_spec(world)
            return all(finished(world, n, f"s3://m/{n}/v2") for n in ("steady", "forged")) \
                and "RestoreFailed" in {r for _, r, _ in _events(world, "forged")}

        wait_for(settled, 150, "steady promoted and forged rolled back", controller.tail)
        time.sleep(2)   # a few more passes over the bad objects
        assert settled()
        metrics = controller.metrics()
        alive = controller.process is not None and controller.process.poll() is None
        for generator in traffic:
            generator.stop()
        tracebacks = _tracebacks(controller)
        log_text = controller.log_file.read_text(errors="replace")

    steady, forged, gated = (state_of(world, n) for n in ("steady", "forged", "gated"))
    assert steady is not None and forged is not None and gated is not None
    events = {n: _events(world, n) for n in (*BAD, "gated")}
    warnings = {n: [(r, m) for t, r, m in e if t == "Warning"] for n, e in events.items()}
    flooded = world.get_isvc(NAMESPACE, "flooded")["metadata"].get("annotations") or {}
    lineage_errors = _metric(metrics, "rollwise_lineage_write_errors_total")
    with capsys.disabled():
        print(f"\nMLMD down and bad annotations: deploys taken up in {taken_up:.1f} s while "
              f"MLMD hangs ({mlmd.accepted} connections to it); steady {steady.phase}, "
              f"forged {forged.phase}, "
              f"gated {gated.phase} at canary {sorted(gated_canary, key=str)}; "
              f"{lineage_errors:.0f} lineage write errors, "
              f"{_metric(metrics, 'rollwise_lineage_pending'):.0f} snapshots pending; "
              f"Warning Events: { {n: sorted({r for r, _ in w}) for n, w in warnings.items()} }; "
              f"/readyz {sorted(set(readyz))} over {len(readyz)} probes; "
              f"{tracebacks} tracebacks; {time.monotonic() - started:.1f} s")
    # The healthy rollout beside them, with lineage down: promoted, never a crash.
    assert steady.phase == Phase.SUCCEEDED, steady.last_decision
    assert alive and tracebacks == 0 and set(readyz) == {200}
    assert lineage_errors > 0 and "lineage unavailable" in log_text
    # The gate cannot be asked: the model waits at 0%, never promoted, never blocked.
    assert gated.phase == Phase.PENDING and gated.storage_uri == "s3://m/gated/v2"
    assert gated_canary == {0}, gated_canary
    assert "the pre-rollout gate waits" in log_text
    # ... and says why, on the object, not only in the controller's log.
    assert any(r == "GateWaiting" and "waiting for the pre-rollout gate: lineage" in m
               for r, m in warnings["gated"]), warnings["gated"]
    assert gated.last_decision is not None
    assert gated.last_decision.reason.startswith("waiting for the pre-rollout gate")
    # Each bad object: a Warning Event naming the problem, and nothing forged obeyed.
    assert any(r == "StateUnreadable" and "step 99 is outside" in m
               for r, m in warnings["step99"]), warnings["step99"]
    assert any(r == "StateUnreadable" and STATE_ANNOTATION in m and "not JSON" in m
               for r, m in warnings["notjson"]), warnings["notjson"]
    assert any(r == "CommandRefused" and "2000 commands pending" in m and "1980 dropped" in m
               for r, m in warnings["flooded"]), warnings["flooded"]
    assert COMMANDS_ANNOTATION not in flooded   # none was sealed: all dropped, our write fit
    assert forged.phase == Phase.FAILED
    assert any(r == "RestoreFailed" and "refusing to restore" in m
               and LAST_GOOD_ANNOTATION in m for r, m in warnings["forged"]), warnings["forged"]
    assert not forged_seen and not _forged_in_spec(world)
    for name in ("step99", "notjson"):   # never acted on, never overwritten
        raw = world.get_isvc(NAMESPACE, name)["metadata"]["annotations"][STATE_ANNOTATION]
        assert ("step" in raw and '"step":99' in raw) if name == "step99" else raw.startswith(
            '{"phase"')
