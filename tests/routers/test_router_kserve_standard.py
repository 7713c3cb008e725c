"""The KServe Standard-mode router on objects the simulated KServe wrote (``standard_world``):
what it reads from the InferenceService and its HTTPRoutes, the exact spec it writes for
each traffic action, the admission hold, what it accepts to drive, and KServe v0.20.0's
route that never splits and the API server before 0.20 that drops ``spec.canary``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from controller.errors import Unsupported
from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary
from controller.routers import ROUTERS, choose
from controller.routers.base import Ref
from controller.routers.kserve_knative import KNATIVE
from controller.routers.kserve_standard import (
    _STATE_ANNOTATION,
    HTTPROUTES,
    STANDARD,
    KServeStandardError,
)
from tests.routers.standard_world import NAME, NS, StandardSim, apply_json_patch, model

CANARY = "rw-378a12de"                 # canary_name of the v2 model below: stable, derived
CANARY_DEPLOYMENT = f"{NAME}-{CANARY}-predictor"
V2_ENTRY = {"predictor": {"name": CANARY, "model": {**model("s3://m/v2"),
                                                    "name": "kserve-container"}},
            "trafficPercent": 10}


def edited(obj: dict[str, Any], uri: str) -> dict[str, Any]:
    """A plain edit of the stable predictor's model, as a GitOps tool makes it."""
    new = copy.deepcopy(obj)
    new["spec"]["predictor"]["model"]["storageUri"] = uri
    return new


def held(sim: StandardSim, uri: str = "s3://m/v2", percent: int = 10) -> list[dict[str, Any]]:
    """The admission hold of an edit to ``uri``, applied; KServe reconciles it."""
    ops = STANDARD.hold(edited(sim.obj, uri), percent, previous=sim.obj)
    assert ops is not None
    sim.obj = apply_json_patch(edited(sim.obj, uri), ops)
    sim.settle()
    return ops


def test_the_stable_alone_serves_everything_and_is_what_gets_adopted() -> None:
    obs = StandardSim().observe()
    assert (obs.latest_created, obs.latest_ready, obs.latest_rolled_out) == (
        "iris-v1-predictor",) * 3
    assert obs.canary_percent is None and obs.storage_uri == "s3://m/v1"
    assert [(t.revision, t.percent) for t in obs.traffic] == [("iris-v1-predictor", 100)]
    assert obs.url == "http://iris-models.example.com" and obs.unrouted is None


def test_the_related_objects_are_kserves_two_routes() -> None:
    assert STANDARD.related(StandardSim().obj) == (
        Ref(HTTPROUTES, NS, "iris"), Ref(HTTPROUTES, NS, "iris-predictor"))
    assert KNATIVE.related(StandardSim().obj) == ()


def test_hold_moves_a_model_edit_out_of_the_predictor_into_a_canary_at_the_first_step() -> None:
    sim = StandardSim()
    ops = held(sim)
    assert ops == [
        {"op": "replace", "path": "/spec/predictor",
         "value": {"name": "v1", "model": model("s3://m/v1")}},
        {"op": "add", "path": "/spec/canary", "value": [V2_ENTRY]}]
    obs = sim.observe()
    # KServe runs the canary's Deployment; not ready yet, it gets no weight whatever its %.
    assert (obs.latest_created, obs.latest_ready) == (CANARY_DEPLOYMENT, "iris-v1-predictor")
    assert obs.canary_percent == 10 and obs.storage_uri == "s3://m/v2"
    assert obs.percent_to(CANARY_DEPLOYMENT) == 0
    sim.bring_up()
    obs = sim.observe()
    assert obs.latest_ready == CANARY_DEPLOYMENT
    assert {t.revision: t.percent for t in obs.traffic} == {
        "iris-v1-predictor": 90, CANARY_DEPLOYMENT: 10}


def test_hold_sets_a_new_canary_entry_to_the_first_step_and_leaves_the_rest() -> None:
    sim = StandardSim()
    held(sim, percent=50)
    assert STANDARD.hold(sim.obj, 10, previous=sim.obj) == [
        {"op": "replace", "path": "/spec/canary/0/trafficPercent", "value": 10}]
    sim.merge({"canary": [{**V2_ENTRY, "trafficPercent": 10}]})
    assert STANDARD.hold(sim.obj, 10, previous=sim.obj) is None
    assert STANDARD.hold(sim.obj, 10) is None          # a create: nothing to protect


def test_hold_leaves_an_edit_alone_where_the_schema_may_drop_spec_canary() -> None:
    """No predictor.name, no spec.canary, no canaryStatuses: maybe KServe before 0.20,
    whose API server would drop the canary and keep the restored predictor (the edit lost).
    The controller finds out at its first write instead."""
    sim = StandardSim(predictor_name=None)
    assert STANDARD.hold(edited(sim.obj, "s3://m/v2"), 10, previous=sim.obj) is None


def test_set_canary_rewrites_only_the_entry_and_keeps_the_spec_identity() -> None:
    sim = StandardSim()
    held(sim)
    sim.bring_up()
    before = sim.observe().spec_hash
    assert STANDARD.write(sim.obj, SetCanary(25)) == {
        "canary": [{**V2_ENTRY, "trafficPercent": 25}]}
    sim.merge(STANDARD.write(sim.obj, SetCanary(25)))
    obs = sim.observe()
    assert obs.spec_hash == before and obs.canary_percent == 25
    assert {t.revision: t.percent for t in obs.traffic} == {
        "iris-v1-predictor": 75, CANARY_DEPLOYMENT: 25}


def test_promote_renames_the_predictor_to_the_canary_without_restarting_it() -> None:
    sim = StandardSim()
    held(sim)
    sim.bring_up()
    before = sim.observe()
    pods = sim.cluster.deployments[CANARY_DEPLOYMENT].current.name
    patch = STANDARD.write(sim.obj, Promote())
    assert patch == {"predictor": {"name": CANARY, "model": model("s3://m/v2")},
                     "canary": None}
    assert not STANDARD.in_effect(Promote(), before, CANARY_DEPLOYMENT)
    sim.merge(patch)
    obs = sim.observe()
    assert set(sim.cluster.deployments) == {CANARY_DEPLOYMENT}      # the old stable is gone
    assert sim.cluster.deployments[CANARY_DEPLOYMENT].current.name == pods   # no restart
    assert obs.latest_rolled_out == CANARY_DEPLOYMENT and obs.canary_percent is None
    assert obs.spec_hash == before.spec_hash        # the webhook sees no new model
    assert STANDARD.in_effect(Promote(), obs, CANARY_DEPLOYMENT)


def test_rollback_is_weight_zero_and_confirmed_from_the_route() -> None:
    sim = StandardSim()
    held(sim)
    sim.bring_up()
    spec = sim.observe().spec_hash
    assert STANDARD.write(sim.obj, RollBack()) == {"canary": [{**V2_ENTRY, "trafficPercent": 0}]}
    sim.merge(STANDARD.write(sim.obj, RollBack()))
    obs = sim.observe()
    assert obs.spec_hash == spec and obs.canary_percent == 0   # the refused model stays named
    assert sim.cluster.deployments[CANARY_DEPLOYMENT].replicas == 0   # and holds no pods
    assert STANDARD.in_effect(RollBack(), obs, CANARY_DEPLOYMENT)
    assert {t.revision: t.percent for t in obs.traffic} == {"iris-v1-predictor": 100}


def test_nothing_is_confirmed_while_the_route_in_force_is_unknown() -> None:
    sim = StandardSim()
    held(sim)
    sim.merge(STANDARD.write(sim.obj, RollBack()))
    routes = sim.related()
    for route in routes.values():
        assert route is not None
        route["metadata"]["generation"] += 1          # written, not accepted by the gateway yet
    obs = STANDARD.observe(sim.obj, routes)
    assert obs.traffic == ()
    assert not STANDARD.in_effect(RollBack(), obs, CANARY_DEPLOYMENT)
    assert STANDARD.observe(sim.obj, {}).traffic == ()               # routes not read


def test_restore_writes_the_stable_back_only_when_it_was_edited() -> None:
    sim = StandardSim()
    last_good = STANDARD.spec(sim.obj)
    held(sim)
    sim.merge(STANDARD.write(sim.obj, RollBack()))
    assert STANDARD.write(sim.obj, RestoreSpec(), last_good=last_good) == {}
    sim.obj["spec"]["predictor"]["model"]["storageUri"] = "s3://m/hand-edit"
    assert STANDARD.write(sim.obj, RestoreSpec(), last_good=last_good) == {
        "predictor": {"model": model("s3://m/v1")}}
    with pytest.raises(KServeStandardError, match="last good"):
        STANDARD.write(sim.obj, RestoreSpec())


def test_an_unguarded_edit_is_pulled_back_into_a_canary_from_the_last_good_spec() -> None:
    sim = StandardSim()
    last_good = STANDARD.spec(sim.obj)
    sim.merge({"predictor": {"model": {"storageUri": "s3://m/v2"}}})   # the webhook was down
    assert sim.observe().canary_percent is None
    patch = STANDARD.write(sim.obj, SetCanary(10), last_good=last_good)
    assert patch == {"predictor": {"model": model("s3://m/v1")}, "canary": [V2_ENTRY]}
    sim.merge(patch)
    assert sim.observe().latest_created == CANARY_DEPLOYMENT
    with pytest.raises(KServeStandardError, match="no promoted spec"):
        STANDARD.write(edited(sim.obj, "s3://m/v3") | {"spec": {"predictor": {}}},
                       SetCanary(10))


def test_kserve_v0_20_0_runs_the_canary_but_never_routes_it() -> None:
    sim = StandardSim(code="v0.20.0")
    held(sim)
    sim.bring_up()
    obs = sim.observe()
    assert obs.latest_ready == CANARY_DEPLOYMENT            # canaryStatuses says ready ...
    assert [(t.revision, t.percent) for t in obs.traffic] == [("iris-v1-predictor", 100)]
    assert obs.unrouted is not None and "v0.20.0" in obs.unrouted   # ... and it serves nothing
    assert f"canary {CANARY} ready at 10%" in obs.unrouted
    assert StandardSim(code="aaac4e29").observe().unrouted is None


def test_before_0_20_the_dropped_canary_makes_the_object_unsupported() -> None:
    """The API server of KServe 0.19 prunes spec.canary (and predictor.name) from
    Rollwise's write; the state written in the same patch says a canary was asked for."""
    sim = StandardSim(predictor_name=None)
    written = apply_json_patch(edited(sim.obj, "s3://m/v2"), [])
    state = {"phase": "Pending", "expected_percent": 10, "id": "r"}
    written["metadata"]["annotations"][STATE_ANNOTATION] = json.dumps(state)
    reason = STANDARD.supports(written)
    assert reason is not None and "KServe before 0.20 has no spec.canary" in reason
    with pytest.raises(Unsupported, match=r"kserve-standard: spec\.canary is absent"):
        choose(ROUTERS, written)
    adopted = {**state, "phase": "Succeeded", "expected_percent": None}
    written["metadata"]["annotations"][STATE_ANNOTATION] = json.dumps(adopted)
    assert STANDARD.supports(written) is None              # nothing was asked for yet


def test_the_state_key_it_reads_is_the_codecs() -> None:
    assert _STATE_ANNOTATION == STATE_ANNOTATION


@pytest.mark.parametrize(("annotation", "status_mode", "router"), [
    ("Standard", None, STANDARD), ("RawDeployment", None, STANDARD), (None, "Standard", STANDARD),
    ("Knative", None, KNATIVE), ("Serverless", None, KNATIVE), (None, None, KNATIVE)])
def test_each_router_drives_its_own_mode_and_refuses_the_other(
        annotation: str | None, status_mode: str | None, router: object) -> None:
    obj = StandardSim().obj
    obj["metadata"]["annotations"].pop("serving.kserve.io/deploymentMode")
    if annotation is not None:
        obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = annotation
    obj["status"].pop("deploymentMode", None)
    if status_mode is not None:
        obj["status"]["deploymentMode"] = status_mode
    assert choose(ROUTERS, obj) is router
    other = STANDARD if router is KNATIVE else KNATIVE
    reason = other.supports(obj)
    assert reason is not None and "mode" in reason


def test_hand_made_canary_entries_are_left_alone_with_a_reason() -> None:
    sim = StandardSim()
    sim.merge({"canary": [{"predictor": {"name": "mine", "model": model("s3://m/x")},
                           "trafficPercent": 5}]})
    reason = STANDARD.supports(sim.obj)
    assert reason is not None and "entries Rollwise did not write (mine)" in reason


def test_the_machine_pauses_an_unrouted_canary_whatever_the_verdict() -> None:
    """Progressing at 20% on KServe v0.20.0: a passing judgement never moves it on."""
    from datetime import UTC, datetime

    from controller.policy.loader import load_text
    from controller.rollout.machine import Judgement, decide
    from controller.rollout.state import Phase, RolloutState
    root = Path(__file__).resolve().parents[2]
    [loaded] = load_text((root / "policies" / "fast.yaml").read_text(), "fast.yaml")
    sim = StandardSim(code="v0.20.0")
    held(sim)
    sim.bring_up()
    obs = sim.observe()
    now = datetime(2026, 3, 1, 9, 10, tzinfo=UTC)
    state = RolloutState(
        id="r1", policy="fast", spec_hash=obs.spec_hash, phase=Phase.PROGRESSING,
        started_at=now, phase_since=now, revision=CANARY_DEPLOYMENT,
        baseline_revision="iris-v1-predictor", step=0, step_started_at=now,
        expected_percent=10)
    result = decide(state, "fast", loaded.policy.spec, obs, now.replace(minute=20),
                    judgement=Judgement("pass", "fine"), router=STANDARD)
    assert result.state is not None and result.state.phase == Phase.PAUSED
    assert result.state.pause is not None and result.state.pause.reason == "unrouted"
    assert result.traffic is None
