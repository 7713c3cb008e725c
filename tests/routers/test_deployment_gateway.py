"""The Deployment + Gateway API router on objects as the API returns them
(``deployment_world``): what it reads (revisions by ``pod-template-hash``, the split in
force from the route at its generation), the exact spec part of each write, the admission
hold, the canary Deployment/Service and route rules it wants for each rollout state, and
why it refuses an object."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.errors import Unsupported
from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary
from controller.rollout.state import Phase, RolloutState
from controller.routers import ROUTERS, choose
from controller.routers.base import Ref, Write
from controller.routers.deployment_gateway import (
    APPLIED_ANNOTATION,
    DEPLOYMENT_GATEWAY,
    DEPLOYMENTS,
    SERVICES,
    DeploymentGatewayError,
    canary_value,
    desired_rules,
    digest,
    merge_diff,
)
from controller.routers.kserve_standard import HTTPROUTES
from tests.routers.deployment_world import (
    NAME,
    NS,
    DeploymentSim,
    deployment,
    route,
    service,
    template,
    template_hash,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ROUTER = DEPLOYMENT_GATEWAY
CANARY_LABELS = {"app": "churn-canary", "rollwise.io/canary": "true"}


def state(phase: Phase, percent: int | None = 10, **changes: Any) -> RolloutState:
    return RolloutState(id="r1", policy="fast", spec_hash="h", phase=phase, started_at=T0,
                        phase_since=T0, expected_percent=percent, **changes)


def edit(sim: DeploymentSim, uri: str) -> None:
    """A template edit of the paused D (the webhook or adoption paused it)."""
    sim.obj["spec"]["template"] = template(uri)
    sim.obj["spec"]["paused"] = True
    sim.obj["metadata"]["generation"] += 1
    sim.settle()


def sync(sim: DeploymentSim, st: RolloutState | None) -> tuple[Write, ...]:
    writes = ROUTER.children(sim.obj, sim.related(), st)
    sim.children.apply(writes)
    sim.settle()
    return writes


def stable_hash(sim: DeploymentSim) -> str:
    return next(rs["metadata"]["labels"]["pod-template-hash"]
                for ref, rs in sim.others.items() if ref.resource.kind == "ReplicaSet"
                and rs["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
                and rs["status"].get("availableReplicas"))


def canary_hash(sim: DeploymentSim) -> str:
    canary = sim.canary()
    assert canary is not None
    return template_hash(canary["spec"]["template"])


def test_the_stable_alone_is_what_gets_adopted() -> None:
    sim = DeploymentSim()
    obs = sim.observe()
    h1 = stable_hash(sim)
    assert (obs.latest_created, obs.latest_ready, obs.latest_rolled_out) == (h1, h1, h1)
    assert obs.canary_percent is None          # not paused: an edit would roll at once
    assert [(t.revision, t.percent) for t in obs.traffic] == [(h1, 100)]
    assert obs.storage_uri == "s3://m/v1" and obs.url == "http://churn.models.example.com"
    assert choose(ROUTERS, sim.obj) is ROUTER


def test_a_template_edit_of_a_paused_deployment_is_a_new_model_held_at_zero() -> None:
    sim = DeploymentSim(paused=True)
    before = sim.observe()
    edit(sim, "s3://m/v2")
    obs = sim.observe()
    assert obs.spec_hash != before.spec_hash and obs.storage_uri == "s3://m/v2"
    assert obs.canary_percent == 0               # paused: the new template serves nothing
    assert obs.latest_created is None            # no canary runs it yet
    assert obs.latest_rolled_out == stable_hash(sim)


def test_the_canary_deployment_service_and_route_it_wants_are_exact() -> None:
    sim = DeploymentSim(paused=True)
    edit(sim, "s3://m/v2")
    writes = ROUTER.children(sim.obj, sim.related(), state(Phase.PENDING, 10))
    assert [(w.verb, w.resource.kind, w.name) for w in writes] == [
        ("create", "Deployment", "churn-canary"), ("create", "Service", "churn-canary"),
        ("patch", "HTTPRoute", "churn")]
    dep, svc, rte = (w.body or {} for w in writes)
    owner = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME, "uid": "d-uid"}]
    assert dep["metadata"]["ownerReferences"] == owner == svc["metadata"]["ownerReferences"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": CANARY_LABELS}
    assert dep["spec"]["template"] == {**template("s3://m/v2"),
                                       "metadata": {"labels": CANARY_LABELS}}
    assert svc["spec"] == {"selector": CANARY_LABELS, "ports": [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
    rules = [{"backendRefs": [{"name": "churn", "port": 80, "weight": 90},
                              {"name": "churn-canary", "port": 80, "weight": 10}]}]
    assert rte == {"metadata": {"resourceVersion": "1",
                                "annotations": {APPLIED_ANNOTATION: digest(rules)}},
                   "spec": {"rules": rules}}


def test_canary_pods_are_never_selected_by_the_deployment_or_its_services() -> None:
    sim = DeploymentSim(paused=True)
    sim.others[Ref(SERVICES, NS, "metrics")] = service("metrics", {"tier": "model"})
    sim.obj["spec"]["template"] = template("s3://m/v2", {"app": NAME, "tier": "model",
                                                         "team": "a"})
    sim.others[Ref(SERVICES, NS, "metrics")]["spec"]["selector"] = {"tier": "model"}
    (dep, *_) = ROUTER.children(sim.obj, sim.related(), state(Phase.PENDING, 10))
    labels = (dep.body or {})["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "churn-canary", "tier": "model-canary", "team": "a",
                      "rollwise.io/canary": "true"}
    for selector in ({"app": NAME}, {"tier": "model"}):
        assert not all(labels.get(k) == v for k, v in selector.items())
    assert canary_value("") == "canary" and canary_value("x" * 63) == "x" * 56 + "-canary"


def test_a_step_is_read_from_the_route_once_its_generation_is_accepted() -> None:
    sim = DeploymentSim(paused=True)
    h1 = stable_hash(sim)
    edit(sim, "s3://m/v2")
    sync(sim, state(Phase.PENDING, 10))
    assert ROUTER.children(sim.obj, sim.related(), state(Phase.PENDING, 10)) == ()
    obs = sim.observe()
    hc = canary_hash(sim)
    assert hc != h1 and obs.latest_created == hc and obs.latest_ready == hc
    assert obs.canary_percent == 10 and obs.latest_rolled_out == h1
    assert [(t.revision, t.percent) for t in obs.traffic] == [(h1, 90), (hc, 10)]
    sync(sim, state(Phase.PROGRESSING, 25))
    sim.route()["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 1
    obs = sim.observe()
    assert obs.canary_percent == 25 and obs.traffic == ()      # not in force yet


def test_a_canary_not_ready_yet_is_created_not_ready() -> None:
    sim = DeploymentSim(paused=True)
    edit(sim, "s3://m/v2")
    writes = ROUTER.children(sim.obj, sim.related(), state(Phase.PENDING, 10))
    sim.children.apply(writes)
    assert sim.observe().latest_created is None     # no status for its generation yet
    sim.settle(canary_ready=False)
    obs = sim.observe()
    assert obs.latest_created == canary_hash(sim) and obs.latest_ready == stable_hash(sim)


def test_a_hand_edit_of_the_route_is_never_written_back() -> None:
    sim = DeploymentSim(paused=True)
    edit(sim, "s3://m/v2")
    sync(sim, state(Phase.PROGRESSING, 10))
    refs = sim.route()["spec"]["rules"][0]["backendRefs"]
    refs[0]["weight"], refs[1]["weight"] = 70, 30          # kubectl edit
    assert ROUTER.children(sim.obj, sim.related(), state(Phase.PROGRESSING, 10)) == ()
    assert sim.observe().canary_percent == 30
    # Paused with the hand's weight adopted: only the digest is brought up to date ...
    (marker,) = ROUTER.children(sim.obj, sim.related(), state(Phase.PAUSED, 30))
    assert marker.verb == "patch" and "spec" not in (marker.body or {})
    sim.children.apply([marker])
    # ... so that a resume writes its weight again.
    sync(sim, state(Phase.PROGRESSING, 10))
    assert sim.weights() == {"churn": 90, "churn-canary": 10}


def test_promotion_rolls_the_deployment_then_the_route_and_the_canary_go() -> None:
    sim = DeploymentSim(paused=True)
    edit(sim, "s3://m/v2")
    sync(sim, state(Phase.PROGRESSING, 50))
    hc = canary_hash(sim)
    promoting = state(Phase.PROMOTING, None)
    assert ROUTER.in_effect(Promote(), sim.observe(), hc) is False
    sync(sim, promoting)
    assert sim.weights() == {"churn": 0, "churn-canary": 100}
    assert ROUTER.write(sim.obj, Promote()) == {"paused": False}
    assert ROUTER.steady(sim.obj, promoting) == {"paused": False}
    sim.obj["spec"]["paused"] = False
    sim.settle()                                          # a real rolling update, done
    obs = sim.observe()
    assert ROUTER.in_effect(Promote(), obs, hc) is True
    assert obs.previous_rolled_out != hc
    done = state(Phase.SUCCEEDED, None)
    assert ROUTER.steady(sim.obj, done) == {"paused": True}
    (back,) = sync(sim, done)
    assert back.resource == HTTPROUTES and sim.weights() == {"churn": 100}
    deletes = sync(sim, done)
    assert [(w.verb, w.resource, w.name) for w in deletes] == [
        ("delete", DEPLOYMENTS, "churn-canary"), ("delete", SERVICES, "churn-canary")]
    assert sim.canary() is None and ROUTER.children(sim.obj, sim.related(), done) == ()


def test_rollback_is_weight_zero_confirmed_from_the_route_then_the_canary_goes() -> None:
    sim = DeploymentSim(paused=True)
    h1 = stable_hash(sim)
    edit(sim, "s3://m/v2")
    sync(sim, state(Phase.PROGRESSING, 10))
    hc = canary_hash(sim)
    assert ROUTER.write(sim.obj, RollBack()) == {"paused": True}
    rolling = state(Phase.ROLLING_BACK, 0)
    assert ROUTER.in_effect(RollBack(), sim.observe(), hc) is False
    sync(sim, rolling)
    assert sim.weights() == {"churn": 100, "churn-canary": 0}
    assert ROUTER.in_effect(RollBack(), sim.observe(), hc) is True
    failed = state(Phase.FAILED, 0)
    sync(sim, failed)
    sync(sim, failed)
    assert sim.canary() is None and sim.weights() == {"churn": 100}
    assert sim.observe().latest_rolled_out == h1 and sim.obj["spec"]["paused"] is True


def test_restore_writes_the_last_promoted_template_back_still_paused() -> None:
    sim = DeploymentSim(paused=True)
    good = ROUTER.spec(sim.obj)
    edit(sim, "s3://m/v2")
    sim.obj["spec"]["template"]["spec"]["containers"][0]["args"] = ["--fast"]
    patch = ROUTER.write(sim.obj, RestoreSpec(), last_good=good)
    assert patch == {"paused": True, "template": {"spec": {"containers": [
        template("s3://m/v1")["spec"]["containers"][0]]}}}
    with pytest.raises(DeploymentGatewayError):
        ROUTER.write(sim.obj, RestoreSpec(), last_good=None)
    assert ROUTER.write(sim.obj, SetCanary(25)) == {"paused": True}


def test_the_admission_hold_pauses_an_unpaused_deployment_only() -> None:
    obj = deployment()
    new = copy.deepcopy(obj)
    new["spec"]["template"] = template("s3://m/v2")
    assert ROUTER.hold(new, 10, previous=obj) == [
        {"op": "add", "path": "/spec/paused", "value": True}]
    new["spec"]["paused"] = True
    assert ROUTER.hold(new, 10, previous=obj) is None


def test_what_it_refuses_to_drive_and_why() -> None:
    obj = deployment()
    assert ROUTER.supports({**obj, "kind": "StatefulSet"}) == "it is not a Deployment"
    expr = copy.deepcopy(obj)
    expr["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    assert "matchExpressions" in (ROUTER.supports(expr) or "")
    owned = copy.deepcopy(obj)
    owned["metadata"]["ownerReferences"] = [{"kind": "InferenceService", "name": "iris",
                                             "controller": True}]
    assert "managed by InferenceService iris" in (ROUTER.supports(owned) or "")
    long = copy.deepcopy(obj)
    long["metadata"]["name"] = "x" * 60
    assert "longer than 63" in (ROUTER.supports(long) or "")
    # An InferenceService never goes to this router, a Deployment never to KServe's.
    with pytest.raises(Unsupported, match="deployment-gateway: it is not"):
        choose([ROUTER], {**obj, "kind": None})
    with pytest.raises(Unsupported, match=r"deployment-gateway: its spec\.selector"):
        choose(ROUTERS, expr)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda s: s.others.pop(Ref(HTTPROUTES, NS, NAME)), "no HTTPRoute in models has a rule"),
    (lambda s: s.others.__setitem__(Ref(HTTPROUTES, NS, "other"), route("other")),
     "several routes or Services serve it"),
    (lambda s: s.others.pop(Ref(SERVICES, NS, NAME)), "no Service selects its pods"),
    (lambda s: s.obj["metadata"]["annotations"].__setitem__("rollwise.io/route", "nope"),
     "HTTPRoute nope \\(rollwise.io/route\\) does not exist"),
    (lambda s: s.route()["spec"]["rules"][0]["backendRefs"].append(
        {"name": "legacy", "port": 80, "weight": 5}), "also sends traffic to legacy"),
])
def test_a_route_it_cannot_split_is_unsupported_with_the_reason(change: Any,
                                                                reason: str) -> None:
    sim = DeploymentSim()
    change(sim)
    with pytest.raises(Unsupported, match=reason):
        sim.observe()


def test_the_route_annotation_picks_one_of_several_routes() -> None:
    sim = DeploymentSim()
    sim.others[Ref(HTTPROUTES, NS, "other")] = route("other")
    sim.obj["metadata"]["annotations"]["rollwise.io/route"] = "other"
    assert sim.observe().canary_percent is None
    assert Ref(HTTPROUTES, NS, "other") in ROUTER.related(sim.obj)


def test_rules_and_merge_diffs_are_exact() -> None:
    r = route()
    assert desired_rules(r, "churn", "churn-canary", None) == [
        {"backendRefs": [{"name": "churn", "port": 80, "weight": 100}]}]
    assert merge_diff({"a": 1, "b": {"c": 1, "d": 2}, "l": [1]},
                      {"b": {"c": 1, "d": 3}, "l": [2], "e": 0}) == {
        "a": None, "b": {"d": 3}, "l": [2], "e": 0}


def test_the_admission_webhook_pauses_a_managed_deployments_template_edit() -> None:
    import base64
    import json

    from controller.kube.webhook import review_response

    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["template"] = template("s3://m/v2")
    review = {"request": {"uid": "u", "operation": "UPDATE", "object": new,
                          "oldObject": old}}
    response = review_response(review, lambda name: None, ROUTERS)["response"]
    assert json.loads(base64.b64decode(response["patch"])) == [
        {"op": "add", "path": "/spec/paused", "value": True}]
    review["request"]["object"] = {**old, "spec": {**old["spec"], "replicas": 5}}  # no model
    assert "patch" not in review_response(review, lambda name: None, ROUTERS)["response"]


def test_the_metrics_preset_queries_per_template_hash() -> None:
    from controller.providers.presets import PRESETS, Part, batched_query

    total, errors = PRESETS["deployment-pods"]("total"), PRESETS["deployment-pods"]("errors")
    assert total is not None and errors is not None
    part = Part("0", NS, NAME, ("5d8f9c7b4", "7c9d6f5b8"), 30, 30)
    query = batched_query(total, [part])
    assert ('http_server_request_duration_seconds_count{namespace="models", '
            'pod_template_hash=~"(5d8f9c7b4|7c9d6f5b8)"}') in query
    assert query.startswith("label_replace(label_replace(sum by (pod_template_hash) (")
    assert 'http_response_status_code=~"5.."' in errors.text


def test_paused_on_a_hand_edit_the_route_and_the_deployment_are_left_as_they_are() -> None:
    from controller.rollout.state import Pause, PauseReason

    sim = DeploymentSim(paused=True)
    edit(sim, "s3://m/v2")
    sync(sim, state(Phase.PROGRESSING, 20))
    refs = sim.route()["spec"]["rules"][0]["backendRefs"]
    refs[0]["weight"], refs[1]["weight"] = 55, 45
    sim.obj["spec"]["paused"] = False                   # and D unpaused by hand
    assert sim.observe().canary_percent == 100           # it rolls the candidate out
    hand = state(Phase.PAUSED, 100, pause=Pause(PauseReason.MANUAL_EDIT, T0))
    assert ROUTER.steady(sim.obj, hand) == {}
    (marker,) = ROUTER.children(sim.obj, sim.related(), hand)
    assert marker.body == {"metadata": {"resourceVersion": "2", "annotations": {
        APPLIED_ANNOTATION: digest(sim.route()["spec"]["rules"])}}}
    sim.children.apply([marker])
    assert ROUTER.children(sim.obj, sim.related(), hand) == ()
    assert sim.weights() == {"churn": 55, "churn-canary": 45}
