"""Tests for simulations.kserve.rules: KServe's and Knative's decisions, case by case.

Each table row names the KServe (kserve/kserve aaac4e29, same logic at v0.15.2) or Knative
code path it reflects. ``ksvc_reconciler.go`` is
pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go and
``inference_service_status.go`` is pkg/apis/serving/v1beta1/inference_service_status.go.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulations.kserve import rules
from simulations.kserve.rules import (
    NEVER_READY,
    PENDING,
    READY_REVISION,
    InferenceService,
    KnativeServiceStatus,
    Readiness,
    Revision,
    Settings,
    TrafficTarget,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NAME = "iris"
NS = "models"
R1, R2, R3 = (f"{NAME}-predictor-0000{n}" for n in (1, 2, 3))


def make_isvc(
    uri: str = "s3://models/iris/v1",
    canary: int | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    generation: int = 1,
    **predictor_extra: Any,
) -> InferenceService:
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}
    predictor.update(predictor_extra)
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return InferenceService(
        name=NAME,
        namespace=NS,
        generation=generation,
        predictor=predictor,
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
    )


@dataclass
class World:
    """An InferenceService's status, its simulated Knative Service and revisions, over time."""

    settings: Settings = field(default_factory=Settings)
    status: dict[str, Any] = field(default_factory=dict)
    ksvc: rules.KnativeService | None = None
    revisions: tuple[Revision, ...] = ()
    readiness: dict[str, Readiness] = field(default_factory=dict)
    now: datetime = T0

    def tick(self, seconds: int = 1) -> None:
        self.now += timedelta(seconds=seconds)

    def _readiness(self, revision: Revision) -> Readiness:
        return self.readiness.get(revision.name, PENDING)

    def apply(self, isvc: InferenceService) -> rules.Settled:
        """Settle KServe on ``isvc`` as a real cluster would once it goes quiet."""
        self.tick()
        settled = rules.settle(
            isvc,
            self.status,
            self.ksvc,
            self.revisions,
            self.now,
            readiness=self._readiness,
            settings=self.settings,
        )
        self.status, self.ksvc, self.revisions = (
            settled.status,
            settled.knative_service,
            (settled.revisions),
        )
        return settled

    def step(self, isvc: InferenceService) -> rules.ReconcileResult:
        """One reconcile only, to see an intermediate status."""
        self.tick()
        revisions = tuple(replace(r, readiness=self._readiness(r)) for r in self.revisions)
        result = rules.reconcile(isvc, self.status, self.ksvc, revisions, self.now, self.settings)
        self.status, self.ksvc = result.status, result.knative_service
        self.revisions = revisions + result.revisions_to_create
        return result

    def ready(self, *names: str) -> None:
        self.readiness.update(dict.fromkeys(names, READY_REVISION))

    def fail(self, *names: str) -> None:
        self.readiness.update(dict.fromkeys(names, NEVER_READY))

    @property
    def predictor(self) -> dict[str, Any]:
        component: dict[str, Any] = self.status.get("components", {}).get("predictor", {})
        return component

    def traffic(self) -> list[tuple[str, bool, int, str]]:
        return [
            (t["revisionName"], t["latestRevision"], t["percent"], t.get("tag", ""))
            for t in self.predictor.get("traffic", [])
        ]

    def condition(self, type_: str) -> dict[str, Any]:
        found = [c for c in self.status.get("conditions", []) if c["type"] == type_]
        assert found, f"no {type_} condition in {self.status.get('conditions')}"
        return dict(found[0])

    def rollout(self) -> tuple[str | None, str | None]:
        return (
            self.predictor.get("latestRolledoutRevision"),
            self.predictor.get("previousRolledoutRevision"),
        )


def deployed(uri: str = "s3://models/iris/v1") -> World:
    """A world where revision 00001 is ready and rolled out."""
    world = World()
    world.apply(make_isvc(uri))
    world.ready(R1)
    world.apply(make_isvc(uri))
    return world


def promoted_to_r2() -> World:
    """Revision 00002 promoted over 00001 (latestRolledout 00002, previous 00001)."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.apply(make_isvc("s3://models/iris/v2"))
    assert world.rollout() == (R2, R1)
    return world


# --- createKnativeService: the Knative traffic block ------------------------------------------


def target(percent: int, latest: bool, revision: str = "", tag: str = "") -> TrafficTarget:
    return TrafficTarget(percent=percent, latest_revision=latest, revision_name=revision, tag=tag)


@pytest.mark.parametrize(
    ("canary", "rolled_out", "tag_routing", "expected"),
    [
        pytest.param(
            None, "", False, [target(100, True)], id="absent-field-blue-green-else-branch"
        ),
        pytest.param(
            10, "", False, [target(100, True)], id="canary-but-nothing-rolled-out-yet-else-branch"
        ),
        pytest.param(
            10,
            R1,
            False,
            [target(10, True), target(90, False, R1, "prev")],
            id="canary-split-latest-plus-prev",
        ),
        pytest.param(100, R1, False, [target(100, True)], id="canary-100-no-prev-target"),
        pytest.param(
            0, R1, False, [target(0, True), target(100, False, R1, "prev")], id="canary-0-all-prev"
        ),
        pytest.param(None, R1, False, [target(100, True)], id="field-removed-promotes"),
        pytest.param(
            10,
            R1,
            True,
            [target(10, True, tag="latest"), target(90, False, R1, "prev")],
            id="enable-tag-routing-adds-latest-tag",
        ),
        pytest.param(
            None, R1, True, [target(100, True, tag="latest")], id="tag-routing-blue-green"
        ),
    ],
)
def test_desired_traffic_follows_create_knative_service(
    canary: int | None, rolled_out: str, tag_routing: bool, expected: list[TrafficTarget]
) -> None:
    """ksvc_reconciler.go createKnativeService: `CanaryTrafficPercent != nil &&
    lastRolledoutRevision != ""` splits, `< 100` adds the `prev` target, else 100 % latest."""
    assert list(rules.desired_traffic(canary, rolled_out, tag_routing)) == expected


# --- PropagateStatus: the revision bookkeeping and the rollback heuristic ---------------------


def kstatus(
    traffic: list[TrafficTarget], latest_ready: str, latest_created: str, *, ready: bool = True
) -> KnativeServiceStatus:
    status: rules.ConditionStatus = "True" if ready else "Unknown"
    return KnativeServiceStatus(
        observed_generation=3,
        latest_created_revision=latest_created,
        latest_ready_revision=latest_ready,
        url=f"http://{NAME}-predictor.{NS}.example.com",
        address_url=f"http://{NAME}-predictor.{NS}.svc.cluster.local",
        traffic=tuple(traffic),
        conditions=tuple(
            rules.Condition(t, status)
            for t in (rules.CONFIGURATIONS_READY, rules.READY, rules.ROUTES_READY)
        ),
    )


@pytest.mark.parametrize(
    ("before", "service", "after"),
    [
        pytest.param(
            ("", ""),
            kstatus([target(100, True, R1)], R1, R1),
            (R1, ""),
            id="first-rollout-100-percent-on-latest-ready",
        ),
        pytest.param(
            (R1, ""),
            kstatus([target(10, True, R1), target(90, False, R1, "prev")], R1, R2),
            (R1, ""),
            id="canary-new-revision-not-ready-latest-ready-is-not-latest-created",
        ),
        pytest.param(
            (R1, ""),
            kstatus([target(10, True, R2), target(90, False, R1, "prev")], R2, R2),
            (R1, ""),
            id="canary-split-is-not-a-rollout",
        ),
        pytest.param(
            (R1, ""),
            kstatus([target(100, True, R2)], R2, R2),
            (R2, R1),
            id="promotion-100-percent-moves-latest-to-previous",
        ),
        pytest.param(
            (R2, R1),
            kstatus([target(0, True, R2), target(100, False, R2, "prev")], R2, R2),
            (R1, R1),
            id="rollback-heuristic-split-over-one-revision-resets-to-previous",
        ),
        pytest.param(
            (R2, R1),
            kstatus([target(50, True, R2), target(50, False, R2, "prev")], R2, R2),
            (R1, R1),
            id="rollback-heuristic-fires-for-any-percent-below-100",
        ),
        pytest.param(
            (R1, ""),
            kstatus([target(10, True, R1), target(90, False, R1, "prev")], R1, R1),
            (R1, ""),
            id="rollback-heuristic-needs-a-previous-rolled-out-revision",
        ),
        pytest.param(
            (R2, R1),
            kstatus([target(10, True, R2), target(90, False, R2, "prev")], R2, R3),
            (R2, R1),
            id="rollback-heuristic-needs-latest-ready-equal-latest-created",
        ),
        pytest.param(
            (R1, ""),
            kstatus([target(90, True, R1)], R1, R1),
            (R1, ""),
            id="kserve-test-rolledout-revision-90-percent-does-not-sum-to-100",
        ),
        pytest.param(
            (R1, R1),
            kstatus([target(0, True, R2), target(100, False, R1, "prev")], R2, R2),
            (R1, R1),
            id="after-rollback-split-over-two-revisions-is-stable",
        ),
        pytest.param(
            (R1, ""),
            kstatus([target(0, True, R2), target(100, False, R1, "prev")], R2, R2),
            (R1, ""),
            id="canary-0-before-promotion-keeps-rolled-out",
        ),
    ],
)
def test_propagate_status_revision_fields(
    before: tuple[str, str], service: KnativeServiceStatus, after: tuple[str, str]
) -> None:
    """inference_service_status.go PropagateStatus: the loop over serviceStatus.Traffic."""
    status = {
        "components": {
            "predictor": {
                "latestRolledoutRevision": before[0],
                "previousRolledoutRevision": before[1],
            }
        }
    }
    out = rules.propagate_status(status, service, T0)["components"]["predictor"]
    assert (
        out.get("latestRolledoutRevision", ""),
        out.get("previousRolledoutRevision", ""),
    ) == after
    assert out["latestReadyRevision"] == service.latest_ready_revision
    assert out["latestCreatedRevision"] == service.latest_created_revision
    assert out["traffic"] == [t.to_json() for t in service.traffic]


def test_propagate_status_copies_url_only_when_knative_service_ready() -> None:
    """PropagateStatus: `if readyCondition ... == ConditionTrue { statusSpec.URL = ... }`."""
    not_ready = rules.propagate_status({}, kstatus([], "", R1, ready=False), T0)
    assert "url" not in not_ready["components"]["predictor"]
    ready = rules.propagate_status(not_ready, kstatus([target(100, True, R1)], R1, R1), T0)
    assert ready["components"]["predictor"]["url"] == f"http://{NAME}-predictor.{NS}.example.com"
    assert ready["components"]["predictor"]["address"] == {
        "url": f"http://{NAME}-predictor.{NS}.svc.cluster.local"
    }
    assert ready["observedGeneration"] == 3  # the Knative Service's, kserve#6081


# --- the whole reconcile: scenarios from KServe's controller tests and code --------------------


def test_create_then_ready_routes_everything_to_revision_one() -> None:
    """controller_test.go "canary out": revision-v1 ready -> latestReady/latestRolledout."""
    world = World()
    world.apply(make_isvc())
    assert [r.name for r in world.revisions] == [R1]
    assert world.predictor["latestCreatedRevision"] == R1
    assert "latestReadyRevision" not in world.predictor
    assert world.traffic() == []
    ready = world.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "Predictor ingress not created")
    route = world.condition("PredictorRouteReady")
    assert (route["status"], route["reason"]) == ("Unknown", "RevisionMissing")
    assert route["message"] == (
        f'Configuration "{NAME}-predictor" is waiting for a Revision to become ready.'
    )
    assert "url" not in world.status
    assert world.status["modelStatus"]["states"]["targetModelState"] == "Loading"

    world.ready(R1)
    world.apply(make_isvc())
    assert world.traffic() == [(R1, True, 100, "")]
    assert world.rollout() == (R1, None)
    assert world.status["url"] == f"http://{NAME}.{NS}.example.com"
    assert world.status["address"] == {"url": f"http://{NAME}.{NS}.svc.cluster.local"}
    assert world.status["deploymentMode"] == "Knative"
    assert world.status["observedGeneration"] == 1
    expected = {
        "IngressReady": ("True", ""),
        "LatestDeploymentReady": ("True", "Info"),
        "PredictorConfigurationReady": ("True", "Info"),
        "PredictorReady": ("True", ""),
        "PredictorRouteReady": ("True", "Info"),
        "Ready": ("True", ""),
        "RoutesReady": ("True", "Info"),
        "Stopped": ("False", "Info"),
    }
    assert {
        c["type"]: (c["status"], c.get("severity", "")) for c in world.status["conditions"]
    } == expected
    assert world.status["modelStatus"] == {
        "transitionStatus": "UpToDate",
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "copies": {"failedCopies": 0, "totalCopies": 1},
    }


def test_canary_splits_then_promotes() -> None:
    """ksvc_reconciler.go split + PropagateStatus promotion; controller_test.go canary case."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2", 10))
    # Knative routes latestRevision to the latest READY revision: still 00001.
    assert world.traffic() == [(R1, True, 10, ""), (R1, False, 90, "prev")]
    assert world.predictor["latestCreatedRevision"] == R2
    assert world.condition("Ready")["status"] == "Unknown"
    prev_entry = world.predictor["traffic"][1]
    assert prev_entry["url"] == f"http://prev-{NAME}-predictor.{NS}.example.com"

    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    assert world.traffic() == [(R2, True, 10, ""), (R1, False, 90, "prev")]
    assert world.rollout() == (R1, None)
    assert world.condition("Ready")["status"] == "True"

    world.apply(make_isvc("s3://models/iris/v2", 100))
    assert world.traffic() == [(R2, True, 100, "")]
    assert world.rollout() == (R2, R1)
    assert [r.name for r in world.revisions] == [R1, R2]  # the percent never made a revision


def test_removing_the_field_promotes_like_100() -> None:
    """createKnativeService else-branch: no canaryTrafficPercent -> latestRevision 100 %."""
    world = deployed()
    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.apply(make_isvc("s3://models/iris/v2"))
    assert world.traffic() == [(R2, True, 100, "")]
    assert world.rollout() == (R2, R1)


def test_zero_before_promotion_sends_everything_to_rolled_out_revision() -> None:
    """canaryTrafficPercent 0 with latestRolledout 00001: latest 0 %, prev 00001 100 %."""
    world = deployed()
    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.apply(make_isvc("s3://models/iris/v2", 0))
    assert world.traffic() == [(R2, True, 0, ""), (R1, False, 100, "prev")]
    assert world.rollout() == (R1, None)


@pytest.mark.parametrize(("percent", "latest_share"), [(0, 0), (50, 50), (99, 99)])
def test_rollback_heuristic_after_promotion(percent: int, latest_share: int) -> None:
    """PropagateStatus "rolled out with 100% and then rolled back": any P < 100 without a spec
    change after a promotion first splits over 00002 alone, then KServe resets latestRolledout
    to previousRolledout (00001) and the next reconcile routes prev to 00001."""
    world = promoted_to_r2()
    settled = world.apply(make_isvc("s3://models/iris/v2", percent))
    assert world.traffic() == [(R2, True, latest_share, ""), (R1, False, 100 - percent, "prev")]
    assert world.rollout() == (R1, R1)
    assert settled.steps >= 4  # split over one revision, heuristic, new split, propagate


def test_rollback_heuristic_intermediate_states() -> None:
    """The heuristic acts one reconcile after the split it reacts to: observable on the way."""
    world = promoted_to_r2()
    isvc = make_isvc("s3://models/iris/v2", 0)
    first = world.step(isvc)  # updates the Knative Service; propagates its old status
    assert first.requeue
    assert world.traffic() == [(R2, True, 100, "")]
    assert [t.to_json()["percent"] for t in first.traffic] == [0, 100]
    assert first.traffic[1].revision_name == R2  # prev is still latestRolledout = 00002
    world.step(isvc)  # propagates the split over 00002 alone: the heuristic fires
    assert world.traffic() == [(R2, True, 0, ""), (R2, False, 100, "prev")]
    assert world.rollout() == (R1, R1)
    world.step(isvc)  # prev now points at 00001 in the Knative Service
    world.step(isvc)
    assert world.traffic() == [(R2, True, 0, ""), (R1, False, 100, "prev")]


def test_percent_change_without_spec_change_after_promotion_rolls_back() -> None:
    """The heuristic cannot tell "start a canary" from "roll back": lowering the percent of a
    promoted revision without a new spec sends the rest to the revision before it."""
    world = promoted_to_r2()
    world.apply(make_isvc("s3://models/iris/v2", 90))
    assert world.traffic() == [(R2, True, 90, ""), (R1, False, 10, "prev")]
    assert world.rollout() == (R1, R1)


def test_percent_without_spec_change_and_one_rollout_keeps_everything_on_it() -> None:
    """Heuristic guard `PreviousRolledoutRevision != ""`: split over 00001 alone stays."""
    world = deployed()
    world.apply(make_isvc(canary=10))
    assert world.traffic() == [(R1, True, 10, ""), (R1, False, 90, "prev")]
    assert world.rollout() == (R1, None)
    assert len(world.revisions) == 1


def test_canary_on_first_deploy_gets_everything_once_ready() -> None:
    """createKnativeService: canary set but lastRolledoutRevision == "" -> blue-green 100 %;
    once 00001 is rolled out, the next reconcile splits again, over 00001 alone."""
    world = World()
    world.apply(make_isvc(canary=10))
    world.ready(R1)
    first = world.step(make_isvc(canary=10))  # Knative caught up: 100 % on 00001, rolled out
    assert [t.percent for t in first.traffic] == [100]
    assert world.traffic() == [(R1, True, 100, "")]
    assert world.rollout() == (R1, None)
    world.apply(make_isvc(canary=10))
    assert world.traffic() == [(R1, True, 10, ""), (R1, False, 90, "prev")]
    assert world.rollout() == (R1, None)


def test_blue_green_waits_for_the_new_revision_to_be_ready() -> None:
    """latestRevision 100 % resolves to the latest ready revision until 00002 is ready."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2"))
    assert world.traffic() == [(R1, True, 100, "")]
    assert world.rollout() == (R1, None)
    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v2"))
    assert world.traffic() == [(R2, True, 100, "")]
    assert world.rollout() == (R2, R1)


def test_new_revision_never_ready_fails_conditions_but_keeps_serving() -> None:
    """configuration.go MarkLatestCreatedFailed -> ConfigurationsReady False RevisionFailed,
    propagated to PredictorReady and Ready; the Route keeps 00001 (latest ready)."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.fail(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    assert world.traffic() == [(R1, True, 10, ""), (R1, False, 90, "prev")]
    message = f'Revision "{R2}" failed with message: Initial scale was never achieved.'
    for type_ in ("PredictorConfigurationReady", "PredictorReady", "Ready"):
        cond = world.condition(type_)
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "False",
            "RevisionFailed",
            message,
        )
    assert world.condition("PredictorRouteReady")["status"] == "True"
    deploy = world.condition("LatestDeploymentReady")
    assert (deploy["status"], deploy["reason"]) == (
        "False",
        "PredictorConfigurationReady not ready",
    )
    assert world.status["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert world.status["modelStatus"]["states"]["targetModelState"] == "FailedToLoad"


def test_first_revision_never_ready() -> None:
    """traffic errors.go unreadyConfigError IsFailure -> "does not have any ready Revision"."""
    world = World()
    world.apply(make_isvc())
    world.fail(R1)
    world.apply(make_isvc())
    route = world.condition("PredictorRouteReady")
    assert (route["status"], route["reason"], route["message"]) == (
        "False",
        "RevisionMissing",
        f'Configuration "{NAME}-predictor" does not have any ready Revision.',
    )
    assert world.condition("Ready")["status"] == "False"
    assert world.traffic() == []
    assert "url" not in world.status


def test_fixed_spec_after_failure_recovers() -> None:
    """findAndSetLatestReadyRevision: the newest ready revision wins; 00002 failed."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.fail(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.apply(make_isvc("s3://models/iris/v3", 10))
    world.ready(R3)
    world.apply(make_isvc("s3://models/iris/v3", 10))
    assert world.traffic() == [(R3, True, 10, ""), (R1, False, 90, "prev")]
    assert world.condition("Ready")["status"] == "True"


def test_older_pending_revision_becoming_ready_is_routed_to() -> None:
    """findAndSetLatestReadyRevision looks at every revision newer than the latest ready."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2"))
    world.apply(make_isvc("s3://models/iris/v3"))
    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v3"))
    assert world.predictor["latestReadyRevision"] == R2
    assert world.predictor["latestCreatedRevision"] == R3
    assert world.traffic() == [(R2, True, 100, "")]
    assert world.condition("PredictorConfigurationReady")["status"] == "Unknown"


def test_observed_generation_is_the_knative_services_not_the_isvcs() -> None:
    """kserve#6081: status.observedGeneration = serviceStatus.ObservedGeneration."""
    world = World()
    world.apply(make_isvc(generation=7))
    world.ready(R1)
    world.apply(make_isvc(generation=7))
    assert world.status["observedGeneration"] == 1
    world.apply(make_isvc("s3://models/iris/v2", 10, generation=8))  # template + traffic: +1
    assert world.status["observedGeneration"] == 2
    world.apply(make_isvc("s3://models/iris/v2", 20, generation=9))  # traffic only: +1
    assert world.status["observedGeneration"] == 3
    world.apply(make_isvc("s3://models/iris/v2", 20, generation=10))  # nothing for the ksvc
    assert world.status["observedGeneration"] == 3


def test_observed_generation_lags_while_knative_catches_up() -> None:
    """KsvcReconciler.Reconcile returns the status read before the update."""
    world = deployed()
    result = world.step(make_isvc("s3://models/iris/v2", 10))
    assert result.requeue
    assert world.status["observedGeneration"] == 1
    assert world.ksvc is not None and world.ksvc.generation == 2
    world.step(make_isvc("s3://models/iris/v2", 10))
    assert world.status["observedGeneration"] == 2


@pytest.mark.parametrize(
    ("annotations", "labels", "settings_", "new_revision"),
    [
        pytest.param({"team": "a"}, {}, Settings(), True, id="isvc-annotation-is-in-template"),
        pytest.param({}, {"team": "a"}, Settings(), True, id="isvc-label-is-in-template"),
        pytest.param(
            {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            {},
            Settings(),
            False,
            id="built-in-disallowed-annotation",
        ),
        pytest.param(
            {"serving.knative.dev/rollout-duration": "60s"},
            {},
            Settings(),
            False,
            id="managed-ksvc-annotation-moves-to-ksvc-metadata",
        ),
        pytest.param(
            {"rollwise.io/state": "{}"},
            {},
            Settings(annotation_disallowed=frozenset({"rollwise.io/state"})),
            False,
            id="configmap-serviceAnnotationDisallowedList",
        ),
        pytest.param(
            {},
            {"networking.knative.dev/visibility": "cluster-local"},
            Settings(),
            False,
            id="built-in-disallowed-label",
        ),
        pytest.param(
            {},
            {"rollwise.io/managed": "true"},
            Settings(label_disallowed=frozenset({"rollwise.io/managed"})),
            False,
            id="configmap-serviceLabelDisallowedList",
        ),
    ],
)
def test_metadata_in_the_revision_template(
    annotations: dict[str, str], labels: dict[str, str], settings_: Settings, new_revision: bool
) -> None:
    """predictor.go buildObjectMeta + createKnativeService: isvc labels and annotations are
    part of spec.template, minus the disallowed lists and managedKsvcAnnotations."""
    world = World(settings=settings_)
    world.apply(make_isvc())
    world.apply(make_isvc(annotations=annotations, labels=labels))
    assert len(world.revisions) == (2 if new_revision else 1)


def test_tag_routing_annotation_tags_latest() -> None:
    """createKnativeService: EnableRoutingTagAnnotationKey == "true" -> Tag "latest"."""
    tagging = {"serving.kserve.io/enable-tag-routing": "true"}
    world = World()
    world.apply(make_isvc(annotations=tagging))
    world.ready(R1)
    world.apply(make_isvc(annotations=tagging))
    world.apply(make_isvc("s3://models/iris/v2", 10, annotations=tagging))
    world.ready(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10, annotations=tagging))
    assert world.traffic() == [(R2, True, 10, "latest"), (R1, False, 90, "prev")]
    latest = world.predictor["traffic"][0]
    assert latest["url"] == f"http://latest-{NAME}-predictor.{NS}.example.com"


def test_revisions_are_numbered_and_hold_the_predictor_without_the_percent() -> None:
    """Knative names revisions <configuration>-<generation:05d>; the percent is route-only."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.apply(make_isvc("s3://models/iris/v3", 20))
    assert [(r.name, r.number) for r in world.revisions] == [(R1, 1), (R2, 2), (R3, 3)]
    assert all("canaryTrafficPercent" not in r.predictor for r in world.revisions)
    assert world.revisions[2].predictor["model"]["storageUri"] == "s3://models/iris/v3"


def test_named_predictor_changes_the_knative_service_name() -> None:
    """constants.PredictorServiceName(name, predictorName)."""
    world = World()
    world.apply(make_isvc(name="blue"))
    assert [r.name for r in world.revisions] == [f"{NAME}-blue-predictor-00001"]


def test_rejected_percent_fails_the_reconcile() -> None:
    """A percent outside 0..100 is refused by Knative's webhook; KServe marks the predictor
    ReconcileFailed (PropagateRawStatusWithMessages) and leaves the Knative Service alone."""
    world = deployed()
    before = world.ksvc
    result = world.step(make_isvc("s3://models/iris/v2", 150))
    assert result.error is not None and "expected 0 <= 150 <= 100" in result.error
    assert world.ksvc == before
    cond = world.condition("PredictorReady")
    assert (cond["status"], cond["reason"]) == ("False", "ReconcileFailed")
    assert world.condition("Ready")["status"] == "False"


def test_deployment_mode_setting() -> None:
    """KServe up to v0.15 writes `Serverless`, from v0.16 `Knative`."""
    world = World(settings=Settings(deployment_mode="Serverless"))
    world.apply(make_isvc())
    assert world.status["deploymentMode"] == "Serverless"


def test_transition_times_move_only_with_the_condition() -> None:
    """knative.dev/pkg SetCondition: an unchanged condition keeps lastTransitionTime."""
    world = deployed()
    before = {c["type"]: c["lastTransitionTime"] for c in world.status["conditions"]}
    world.apply(make_isvc())
    world.apply(make_isvc("s3://models/iris/v2", 10))
    after = {c["type"]: c["lastTransitionTime"] for c in world.status["conditions"]}
    assert after["Stopped"] == before["Stopped"]
    assert after["RoutesReady"] == before["RoutesReady"]
    assert after["PredictorReady"] > before["PredictorReady"]  # True -> Unknown
    assert after["PredictorReady"] == world.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_reconcile_is_pure() -> None:
    """Same inputs, same outputs; inputs untouched; no clock read (naive time refused)."""
    world = deployed()
    status_before = copy.deepcopy(world.status)
    isvc = make_isvc("s3://models/iris/v2", 10)
    first = rules.reconcile(isvc, world.status, world.ksvc, world.revisions, T0)
    second = rules.reconcile(isvc, world.status, world.ksvc, world.revisions, T0)
    assert first == second
    assert world.status == status_before
    with pytest.raises(ValueError, match="timezone-aware"):
        rules.reconcile(isvc, world.status, world.ksvc, world.revisions, T0.replace(tzinfo=None))


def test_condition_set_marks_happy_from_the_most_recent_unhappy_dependent() -> None:
    """condition_set.go findUnhappyDependent: False trumps Unknown; then most recent first."""
    world = deployed()
    world.apply(make_isvc("s3://models/iris/v2", 10))
    world.fail(R2)
    world.apply(make_isvc("s3://models/iris/v2", 10))
    # PredictorReady is False (RevisionFailed), IngressReady True: Ready takes PredictorReady.
    assert world.condition("Ready")["reason"] == "RevisionFailed"


# --- properties over random histories ------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    version: int
    canary: int | None


@dataclass(frozen=True)
class Become:
    revision: int  # index into the revisions created so far (modulo)
    ready: bool


operations = st.lists(
    st.one_of(
        st.builds(
            SetSpec,
            version=st.integers(1, 3),
            canary=st.one_of(st.none(), st.integers(0, 100), st.sampled_from([0, 100])),
        ),
        st.builds(Become, revision=st.integers(0, 20), ready=st.booleans()),
    ),
    min_size=1,
    max_size=14,
)


def check_invariants(world: World, isvc: InferenceService) -> None:
    ksvc = world.ksvc
    assert ksvc is not None
    revisions = {r.name: r for r in world.revisions}
    ready = [r for r in world.revisions if world.readiness.get(r.name) == READY_REVISION]
    traffic = world.predictor.get("traffic", [])
    assert traffic == [t.to_json() for t in ksvc.status.traffic]
    if traffic:
        assert sum(t["percent"] for t in traffic) == 100
    for entry in traffic:
        assert entry["revisionName"] in revisions
        assert world.readiness.get(entry["revisionName"]) == READY_REVISION
        if entry["latestRevision"]:
            assert entry["revisionName"] == world.predictor["latestReadyRevision"]
    for key in ("latestRolledoutRevision", "previousRolledoutRevision"):
        if world.predictor.get(key):
            assert world.readiness.get(world.predictor[key]) == READY_REVISION
    # Revisions: 00001..N, N = the Configuration's generation; newest is latest created.
    assert [r.number for r in world.revisions] == list(range(1, len(world.revisions) + 1))
    assert ksvc.configuration_generation == len(world.revisions)
    assert world.predictor["latestCreatedRevision"] == world.revisions[-1].name
    if ready:
        assert world.predictor["latestReadyRevision"] == ready[-1].name
    assert world.status["observedGeneration"] == ksvc.generation
    if world.condition("Ready")["status"] == "True":
        assert world.condition("PredictorReady")["status"] == "True"
        assert world.condition("IngressReady")["status"] == "True"
        assert world.predictor["latestCreatedRevision"] == world.predictor["latestReadyRevision"]
    # Without the field, the latest ready revision has everything.
    if "canaryTrafficPercent" not in isvc.predictor and ready:
        assert [(t["revisionName"], t["percent"]) for t in traffic] == [(ready[-1].name, 100)]
    # Quiescent: one more reconcile changes nothing and creates nothing.
    revs = tuple(replace(r, readiness=world._readiness(r)) for r in world.revisions)
    again = rules.reconcile(isvc, world.status, ksvc, revs, world.now + timedelta(seconds=30))
    assert (again.status, again.requeue, again.revisions_to_create) == (world.status, False, ())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_properties_over_random_histories(ops: list[SetSpec | Become]) -> None:
    world = World()
    isvc = make_isvc()
    world.apply(isvc)
    for op in ops:
        if isinstance(op, SetSpec):
            isvc = make_isvc(f"s3://models/iris/v{op.version}", op.canary)
        else:
            chosen = world.revisions[op.revision % len(world.revisions)].name
            if world.readiness.get(chosen, PENDING) == PENDING:  # readiness only moves once
                world.readiness[chosen] = READY_REVISION if op.ready else NEVER_READY
        count_before = len(world.revisions)
        template_before = world.ksvc.template if world.ksvc else None
        world.apply(isvc)
        assert world.ksvc is not None
        # Only a template change makes a revision, and exactly one.
        expected = count_before + int(world.ksvc.template != template_before)
        assert len(world.revisions) == expected
        check_invariants(world, isvc)


@settings(max_examples=60, deadline=None)
@given(
    version=st.integers(1, 3),
    canary=st.one_of(st.none(), st.integers(0, 100)),
    seconds=st.integers(1, 10_000),
)
def test_single_reconcile_properties(version: int, canary: int | None, seconds: int) -> None:
    """Every single reconcile step: spec traffic sums to 100 and names known revisions."""
    world = deployed()
    isvc = make_isvc(f"s3://models/iris/v{version}", canary)
    now = world.now + timedelta(seconds=seconds)
    result = rules.reconcile(
        isvc,
        world.status,
        world.ksvc,
        tuple(replace(r, readiness=world._readiness(r)) for r in world.revisions),
        now,
    )
    assert sum(t.percent for t in result.traffic) == 100
    named = {t.revision_name for t in result.traffic if not t.latest_revision}
    assert named <= {r.name for r in world.revisions}
    for cond in result.status["conditions"]:
        assert cond["status"] in ("True", "False", "Unknown")
        assert cond["lastTransitionTime"] <= now.strftime("%Y-%m-%dT%H:%M:%SZ")
