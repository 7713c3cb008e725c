"""The reconciler on in-memory fakes: the exact patch it sends, and what it refuses to do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.kube.annotations import SEAL_LAST_GOOD, STATE_ANNOTATION
from controller.kube.fakes import FakeChildren, FakeEvents, FakeObjects
from controller.policystore import PolicyStore
from controller.reconciler import Reconciler
from controller.rollout.machine import Judgement
from controller.rollout.state import RolloutState
from controller.routers import ROUTERS
from controller.routers.kserve_knative import KNATIVE
from controller.telemetry import Telemetry
from tests.fakes import TEST_SEALER, FakeAnalyzer, sealed_state

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def isvc(uri: str, percent: int | None, *, rolled_out: str = "churn-predictor-00001",
         created: str = "churn-predictor-00001", ready: str | None = None,
         state: RolloutState | None = None, policy: str = "fast") -> dict[str, Any]:
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"},
                                           "storageUri": uri}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    annotations = {"rollwise.io/policy": policy}
    if state is not None:
        annotations[STATE_ANNOTATION] = sealed_state(state, "u1")
    return {
        "metadata": {"namespace": "models", "name": "churn", "uid": "u1",
                     "resourceVersion": "10", "annotations": annotations},
        "spec": {"predictor": predictor},
        "status": {"components": {"predictor": {
            "latestCreatedRevision": created, "latestReadyRevision": ready or created,
            "latestRolledoutRevision": rolled_out,
            "traffic": [{"revisionName": ready or created, "percent": 100,
                         "latestRevision": True}]}}},
    }


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    (tmp_path / "fast.yaml").write_text((ROOT / "policies" / "fast.yaml").read_text())
    return PolicyStore(tmp_path)


def make(store: PolicyStore, isvcs: FakeObjects, judgement: Judgement | None = None,
         now: datetime = T0, children: FakeChildren | None = None,
         ) -> tuple[Reconciler, FakeEvents, FakeAnalyzer]:
    events, analyzer = FakeEvents(), FakeAnalyzer(judgement)
    reconciler = Reconciler(objects=isvcs, routers=ROUTERS, policies=store, analyzer=analyzer,
                            events=events, telemetry=Telemetry(), sealer=TEST_SEALER,
                            clock=lambda: now, children=children)
    return reconciler, events, analyzer


def progressing_state() -> RolloutState:
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002")
    from controller.rollout.state import Phase

    return RolloutState(
        id="r1", policy="fast", spec_hash=KNATIVE.observe(obj).spec_hash,
        phase=Phase.PROGRESSING, started_at=T0, phase_since=T0, storage_uri="s3://m/v2",
        baseline_revision="churn-predictor-00001", known_revision="churn-predictor-00001",
        revision="churn-predictor-00002", step=0, step_started_at=T0, expected_percent=10)


def test_unguarded_deploy_is_pulled_back_with_state_in_one_fenced_patch(
        store: PolicyStore) -> None:
    adopted = isvc("s3://m/v1", None)
    isvcs = FakeObjects(adopted, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs)
    reconciler.run_once()  # adopt v1
    obj = isvcs.objects[("models", "churn")]
    obj["spec"]["predictor"]["model"]["storageUri"] = "s3://m/v2"  # deploy without a percent
    reconciler.run_once()
    namespace, name, patch = isvcs.patches[-1]
    assert (namespace, name) == ("models", "churn")
    assert patch["metadata"]["resourceVersion"] == "11"
    assert patch["spec"] == {"predictor": {"canaryTrafficPercent": 10}}
    state = json.loads(patch["metadata"]["annotations"][STATE_ANNOTATION])
    assert state["phase"] == "Pending" and state["expected_percent"] == 10
    assert {"RolloutStarted", "UnguardedDeploy"} <= {e["reason"] for e in events.recorded}


def test_passing_step_advances_with_exact_patch(store: PolicyStore) -> None:
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    now = T0 + timedelta(minutes=3)
    reconciler, events, analyzer = make(store, isvcs, Judgement(
        "pass", "fine", evidence={"a": {"n": 1}}, closing={"a": {"n": 2}}), now)
    reconciler.run_once()
    assert analyzer.requests[0].canary_revision == "churn-predictor-00002"
    assert analyzer.requests[0].min_requests == 300
    (_, _, patch), = isvcs.patches
    assert patch["spec"] == {"predictor": {"canaryTrafficPercent": 50}}
    state = json.loads(patch["metadata"]["annotations"][STATE_ANNOTATION])
    assert (state["step"], state["phase"], state["evidence"]) == (1, "Progressing",
                                                                  {"a": {"n": 2}})
    assert events.recorded[-1]["reason"] == "StepAdvanced"


class _Crash(Exception):
    pass


class _DiesBeforeEvents(FakeEvents):
    """The process is killed right after its committed write, before any Event."""

    def record(self, *args: Any, **kwargs: Any) -> None:
        raise _Crash


def test_an_event_lost_to_a_crash_after_the_commit_is_recorded_after_the_restart_once(
        store: PolicyStore) -> None:
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    now = T0 + timedelta(minutes=3)
    crashed = Reconciler(objects=isvcs, routers=ROUTERS, policies=store, analyzer=FakeAnalyzer(
        Judgement("pass", "fine")), events=_DiesBeforeEvents(), telemetry=Telemetry(),
        sealer=TEST_SEALER, clock=lambda: now)
    with pytest.raises(_Crash):
        crashed.run_once()
    assert len(isvcs.patches) == 1          # the step advanced and was committed
    events = FakeEvents()
    for _ in range(2):                      # two restarts: the Event is recorded once
        restarted = Reconciler(objects=isvcs, routers=ROUTERS, policies=store,
                               analyzer=FakeAnalyzer(), events=events, telemetry=Telemetry(),
                               sealer=TEST_SEALER, clock=lambda: now)
        restarted.run_once()
    assert [e["reason"] for e in events.recorded] == ["StepAdvanced"]
    assert len(isvcs.patches) == 1          # and nothing else was written


def test_a_409_writes_nothing_else_and_records_no_event(store: PolicyStore) -> None:
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    isvcs.conflict_next = True
    reconciler, events, _ = make(store, isvcs, Judgement("fail", "bad"),
                                 T0 + timedelta(minutes=3))
    reconciler.run_once()
    assert isvcs.patches == [] and events.recorded == []
    assert reconciler.telemetry.conflicts._value.get() == 1  # type: ignore[attr-defined]


def test_missing_policy_is_reported_once_and_nothing_is_written(store: PolicyStore) -> None:
    isvcs = FakeObjects(isvc("s3://m/v1", None, policy="nope"), commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs)
    reconciler.run_once()
    reconciler.run_once()
    assert isvcs.patches == []
    assert [e["reason"] for e in events.recorded] == ["PolicyNotFound"]


def test_unreadable_state_is_never_overwritten(store: PolicyStore) -> None:
    obj = isvc("s3://m/v2", 10)
    obj["metadata"]["annotations"][STATE_ANNOTATION] = "{not json"
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs)
    reconciler.run_once()
    assert isvcs.patches == [] and events.recorded[0]["reason"] == "StateUnreadable"


def test_an_invalid_policy_edit_keeps_the_last_good_version(store: PolicyStore) -> None:
    assert store.reload().changed
    path = store.directory / "fast.yaml"
    path.write_text(path.read_text().replace("alpha: 0.05", "alpha: 7"))
    reload = store.reload()
    assert reload.kept_stale == ("fast",) and reload.problems
    policy = store.get("fast")
    assert policy is not None and policy.spec.analysis.alpha == 0.05


def test_an_invalid_policy_edit_is_reported_on_the_objects_that_use_it(
        store: PolicyStore) -> None:
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs, Judgement("pass", "fine"),
                                 T0 + timedelta(minutes=3))
    store.reload()
    path = store.directory / "fast.yaml"
    path.write_text(path.read_text().replace("alpha: 0.05", "alpha: 7"))
    reconciler.run_once()
    reconciler.run_once()
    assert [e["reason"] for e in events.recorded].count("PolicyInvalid") == 1
    assert "last good version stays in force" in events.recorded[0]["message"]
    assert isvcs.patches  # the rollout went on under the last good version


def test_analysis_looks_every_few_seconds_not_every_pass(store: PolicyStore) -> None:
    """Anytime-valid tests may look as often as they like: every look_every (10 s here),
    not once an interval, and not at every pass either."""
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    clock = [T0]
    events, analyzer = FakeEvents(), FakeAnalyzer(Judgement("continue", "wait"))
    reconciler = Reconciler(objects=isvcs, routers=ROUTERS, policies=store, analyzer=analyzer,
                            events=events, telemetry=Telemetry(), sealer=TEST_SEALER,
                            clock=lambda: clock[0], look_every=timedelta(seconds=10))
    for seconds in (5, 30, 35, 40, 45, 61):
        clock[0] = T0 + timedelta(seconds=seconds)
        reconciler.run_once()
    assert len(analyzer.requests) == 3   # at 30, 40, 61 (5: the step is too young)


def test_commands_wait_under_one_fixed_key_and_are_consumed_with_the_action(
        store: PolicyStore) -> None:
    from controller.kube.annotations import COMMANDS_ANNOTATION
    from controller.kube.commands import submit_command
    from controller.rollout.state import Command

    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    abort = Command("c1", "abort", "alice", T0, rollout="r1")
    submit_command(isvcs, "models", "churn", abort)
    submit_command(isvcs, "models", "churn", abort)  # a replay is not added twice
    pause = Command("c2", "pause", "bob", T0 + timedelta(seconds=1), rollout="r1")
    submit_command(isvcs, "models", "churn", pause)
    annotations = isvcs.objects[("models", "churn")]["metadata"]["annotations"]
    assert [c["id"] for c in json.loads(annotations[COMMANDS_ANNOTATION])] == ["c1", "c2"]
    assert all(not k.startswith("rollwise.io/command-") for k in annotations)
    reconciler, _, _ = make(store, isvcs, now=T0 + timedelta(minutes=1))
    reconciler.run_once()
    _, _, patch = isvcs.patches[-1]
    assert patch["spec"] == {"predictor": {"canaryTrafficPercent": 0}}
    assert [c["id"] for c in json.loads(patch["metadata"]["annotations"][COMMANDS_ANNOTATION])] \
        == ["c2"]


def test_a_command_added_between_read_and_write_is_not_lost(store: PolicyStore) -> None:
    from controller.kube.commands import submit_command
    from controller.rollout.state import Command

    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    isvcs.conflict_next = True  # someone else wrote first
    submit_command(isvcs, "models", "churn", Command("c1", "pause", "a", T0))
    assert len(isvcs.patches) == 1  # retried after the 409


def test_restore_previous_spec_after_a_confirmed_rollback(tmp_path: Path) -> None:
    from controller.kube.annotations import LAST_GOOD_ANNOTATION
    from controller.rollout.state import Phase

    source = (ROOT / "policies" / "fast.yaml").read_text().replace(
        "  onMissingData:", "  onFailure: {restorePreviousSpec: true}\n  onMissingData:")
    (tmp_path / "fast.yaml").write_text(source)
    store = PolicyStore(tmp_path)
    state = progressing_state().evolve(phase=Phase.ROLLING_BACK, ending=Phase.FAILED,
                                       expected_percent=0)
    obj = isvc("s3://m/v2", 0, created="churn-predictor-00002", state=state)
    obj["spec"]["predictor"]["minReplicas"] = 2  # a field the good spec did not have
    state = state.evolve(spec_hash=KNATIVE.observe(obj).spec_hash)
    obj["metadata"]["annotations"][STATE_ANNOTATION] = sealed_state(state, "u1")
    obj["status"]["components"]["predictor"]["traffic"] = [
        {"revisionName": "churn-predictor-00001", "percent": 100},
        {"revisionName": "churn-predictor-00002", "percent": 0, "latestRevision": True}]
    good = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m/v1"}}
    obj["metadata"]["annotations"][LAST_GOOD_ANNOTATION] = TEST_SEALER.seal_text(
        SEAL_LAST_GOOD, "u1", {"predictor": good})
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(store, isvcs, now=T0 + timedelta(minutes=5))
    reconciler.run_once()
    (_, _, patch), = isvcs.patches
    assert patch["spec"]["predictor"] == {**good, "minReplicas": None,
                                          "canaryTrafficPercent": 0}
    assert json.loads(patch["metadata"]["annotations"][STATE_ANNOTATION])["phase"] == "Failed"
    assert {"RolledBack", "RestoringSpec"} <= {e["reason"] for e in events.recorded}
    # Next pass: the restored spec is a new model to Rollwise, rolled out from a terminal
    # state (nothing superseded), held at the first step.
    reconciler.run_once()
    _, _, second = isvcs.patches[-1]
    started = json.loads(second["metadata"]["annotations"][STATE_ANNOTATION])
    assert started["phase"] == "Pending" and started["storage_uri"] == "s3://m/v1"
    assert "Superseded" not in {e["reason"] for e in events.recorded}


def test_restore_without_a_recorded_spec_is_reported_and_the_rollback_stands(
        tmp_path: Path) -> None:
    from controller.rollout.state import Phase

    source = (ROOT / "policies" / "fast.yaml").read_text().replace(
        "  onMissingData:", "  onFailure: {restorePreviousSpec: true}\n  onMissingData:")
    (tmp_path / "fast.yaml").write_text(source)
    state = progressing_state().evolve(phase=Phase.ROLLING_BACK, ending=Phase.FAILED,
                                       expected_percent=0)
    obj = isvc("s3://m/v2", 0, created="churn-predictor-00002", state=state)
    obj["status"]["components"]["predictor"]["traffic"] = [
        {"revisionName": "churn-predictor-00001", "percent": 100}]
    isvcs = FakeObjects(obj, commands_webhook=TEST_SEALER)
    reconciler, events, _ = make(PolicyStore(tmp_path), isvcs, now=T0 + timedelta(minutes=5))
    reconciler.run_once()
    (_, _, patch), = isvcs.patches
    assert "spec" not in patch
    assert json.loads(patch["metadata"]["annotations"][STATE_ANNOTATION])["phase"] == "Failed"
    assert "RestoreFailed" in {e["reason"] for e in events.recorded}


# --- shared by the routers: the same story on a Knative and a Standard-mode object ---------


class _KnativeCase:
    """An InferenceService in Knative mode (hand-built status, as above)."""

    key = ("models", "churn")
    adopted_spec: Any = None
    children: FakeChildren | None = None

    def __init__(self) -> None:
        self.pulled_back: Any = {"predictor": {"canaryTrafficPercent": 10}}

    def adopted(self) -> FakeObjects:
        return FakeObjects(isvc("s3://m/v1", None), commands_webhook=TEST_SEALER)

    def edit_model(self, objects: FakeObjects, uri: str) -> None:
        objects.objects[self.key]["spec"]["predictor"]["model"]["storageUri"] = uri
        _changed(objects.objects[self.key])


class _StandardCase:
    """An InferenceService in Standard mode, reconciled by the simulated KServe."""

    key = ("models", "iris")
    adopted_spec: Any = None
    children: FakeChildren | None = None

    def __init__(self) -> None:
        from tests.routers.standard_world import StandardSim, model
        from tests.routers.test_router_kserve_standard import V2_ENTRY

        self.sim = StandardSim()
        self.pulled_back = {"predictor": {"model": model("s3://m/v1")}, "canary": [V2_ENTRY]}

    def adopted(self) -> FakeObjects:
        objects = self.sim.fake()
        objects.commands_webhook = TEST_SEALER
        return objects

    def edit_model(self, objects: FakeObjects, uri: str) -> None:
        objects.objects[self.key]["spec"]["predictor"]["model"]["storageUri"] = uri
        _changed(objects.objects[self.key])
        self.sim.sync(objects)        # KServe rolls the stable Deployment at once


class _DeploymentCase:
    """A plain Deployment behind an HTTPRoute (the deployment controller simulated)."""

    key = ("models", "churn")
    def __init__(self) -> None:
        from tests.routers.deployment_world import DeploymentSim

        self.adopted_spec: Any = {"paused": True}         # kept paused from adoption on
        # A template edit with paused reset (kubectl replace) while the webhook was down:
        # pulled back by pausing D again.
        self.pulled_back: Any = {"paused": True}
        self.sim = DeploymentSim()
        self.children: FakeChildren | None = self.sim.children

    def adopted(self) -> FakeObjects:
        return self.sim.objects

    def edit_model(self, objects: FakeObjects, uri: str) -> None:
        from tests.routers.deployment_world import template

        obj = objects.objects[self.key]
        obj["spec"]["template"] = template(uri)
        obj["spec"]["paused"] = False
        _changed(obj)


def _changed(obj: dict[str, Any]) -> None:
    """A hand edit, as the API server stores it: a new resourceVersion."""
    obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)


Case = _KnativeCase | _StandardCase | _DeploymentCase
CASES = [pytest.param(_KnativeCase, id="kserve-knative"),
         pytest.param(_StandardCase, id="kserve-standard"),
         pytest.param(_DeploymentCase, id="deployment-gateway")]


@pytest.mark.parametrize("case_type", CASES)
def test_an_unguarded_model_change_is_pulled_back_in_one_fenced_patch(
        store: PolicyStore, case_type: type[Case]) -> None:
    case = case_type()
    objects = case.adopted()
    reconciler, events, _ = make(store, objects, children=case.children)
    reconciler.run_once()                                   # adopt v1
    adopted = json.loads(objects.patches[-1][2]["metadata"]["annotations"][STATE_ANNOTATION])
    assert adopted["phase"] == "Succeeded"
    assert objects.patches[-1][2].get("spec") == case.adopted_spec
    case.edit_model(objects, "s3://m/v2")                   # the webhook was down
    version = objects.objects[case.key]["metadata"]["resourceVersion"]
    reconciler.run_once()
    namespace, name, patch = objects.patches[-1]
    assert (namespace, name) == case.key
    assert patch["metadata"]["resourceVersion"] == version
    assert patch["spec"] == case.pulled_back
    state = json.loads(patch["metadata"]["annotations"][STATE_ANNOTATION])
    assert state["phase"] == "Pending" and state["expected_percent"] == 10
    assert {"RolloutStarted", "UnguardedDeploy"} <= {e["reason"] for e in events.recorded}


@pytest.mark.parametrize("case_type", CASES)
def test_a_conflict_writes_nothing_and_the_next_pass_retries(
        store: PolicyStore, case_type: type[Case]) -> None:
    case = case_type()
    objects = case.adopted()
    reconciler, _, _ = make(store, objects, children=case.children)
    reconciler.run_once()
    case.edit_model(objects, "s3://m/v2")
    written = len(objects.patches)
    objects.conflict_next = True
    reconciler.run_once()
    assert len(objects.patches) == written
    reconciler.run_once()
    assert objects.patches[-1][2]["spec"] == case.pulled_back


@pytest.mark.parametrize("case_type", CASES)
def test_a_write_an_admission_webhook_refuses_is_reported_on_the_object_once(
        store: PolicyStore, case_type: type[Case]) -> None:
    """KServe's validator answers a bad spec with 403 (``client.failure`` makes it
    ``Rejected``): reported on the object, never a crash."""
    case = case_type()
    objects = case.adopted()
    reconciler, events, _ = make(store, objects, children=case.children)
    reconciler.run_once()
    case.edit_model(objects, "s3://m/v2")
    objects.rejected[case.key] = ('admission webhook "inferenceservice.kserve-webhook-server.'
                                  'validator" denied the request: canary predictor.name is '
                                  'required')
    reconciler.run_once()
    reconciler.run_once()
    failed = [e for e in events.recorded if e["reason"] == "ReconcileFailed"]
    assert len(failed) == 1 and failed[0]["name"] == case.key[1] and failed[0]["warning"]
    assert "denied the request" in failed[0]["message"]
    assert "the rollout state could not be written" in failed[0]["message"]


# --- Standard mode only ------------------------------------------------------------------


def test_a_canary_kserve_v0_20_0_never_routes_is_paused_never_judged_as_served(
        store: PolicyStore) -> None:
    from controller.kube.webhook import review_response
    from tests.routers.standard_world import StandardSim, apply_json_patch

    sim = StandardSim(code="v0.20.0")
    objects = sim.fake()
    reconciler, events, _ = make(store, objects, Judgement("pass", "fine"),
                                 T0 + timedelta(minutes=5))
    reconciler.run_once()                                        # adopt
    old = objects.get(*_StandardCase.key)
    assert old is not None
    new = json.loads(json.dumps(old))
    new["spec"]["predictor"]["model"]["storageUri"] = "s3://m/v2"
    review = {"request": {"uid": "r", "operation": "UPDATE", "object": new, "oldObject": old}}
    answer = review_response(review, store.get, ROUTERS)["response"]
    import base64

    objects.objects[_StandardCase.key] = apply_json_patch(
        new, json.loads(base64.b64decode(answer["patch"])))      # what the webhook holds
    sim.sync(objects)
    reconciler.run_once()                                        # Pending
    sim.sync(objects, bring_up=True)                             # the canary is ready ...
    for _ in range(4):
        reconciler.run_once()
        sim.sync(objects)
    state = json.loads(objects.objects[_StandardCase.key]["metadata"]["annotations"]
                       [STATE_ANNOTATION])
    assert (state["phase"], state["pause"]["reason"]) == ("Paused", "unrouted")
    assert "routes only to iris-v1-predictor" in state["pause"]["message"]
    assert not [p for *_, p in objects.patches if "predictor" in p.get("spec", {})]  # no Promote
    assert [e["reason"] for e in events.recorded if e["warning"]] == ["Paused"]


class _PrunesCanary(FakeObjects):
    """The API server of KServe 0.19: its CRD has no spec.canary nor predictor.name, so it
    drops them from every write (as it does, silently, without strict field validation)."""

    def patch(self, namespace: str, name: str, patch: Any) -> Any:
        written = super().patch(namespace, name, patch)
        stored = self.objects[(namespace, name)]
        stored["spec"].pop("canary", None)
        stored["spec"]["predictor"].pop("name", None)
        return written


def test_before_0_20_the_dropped_canary_is_reported_once_and_never_written_again(
        store: PolicyStore) -> None:
    from tests.routers.standard_world import StandardSim

    sim = StandardSim(predictor_name=None)
    objects = _PrunesCanary(json.loads(json.dumps(sim.obj)), commands_webhook=TEST_SEALER)
    sim.publish(objects)
    reconciler, events, _ = make(store, objects)
    reconciler.run_once()                                        # adopt
    objects.objects[_StandardCase.key]["spec"]["predictor"]["model"]["storageUri"] = "s3://m/v2"
    reconciler.run_once()                                        # the pull-back, pruned
    assert "canary" in objects.patches[-1][2]["spec"]
    written = len(objects.patches)
    for _ in range(3):
        reconciler.run_once()
    assert len(objects.patches) == written                       # no write loop
    [unsupported] = [e for e in events.recorded if e["reason"] == "Unsupported"]
    assert "KServe before 0.20 has no spec.canary" in unsupported["message"]
    assert "re-apply it" in unsupported["message"]
