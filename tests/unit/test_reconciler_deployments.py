"""The reconciler driving a plain Deployment behind an HTTPRoute, on the shipped fakes with
the deployment controller and the gateway simulated (``tests/routers/deployment_world``):
the canary and the route's weights follow the committed state level-triggered, a crash
between the commit and the children loses nothing and is not taken for a hand edit, a hand
edit of the route pauses and is never written back, promotion rolls D and removes the
canary, a rollback leaves D on its old pods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.errors import KubeError
from controller.kube.annotations import STATE_ANNOTATION
from controller.kube.fakes import FakeEvents
from controller.policystore import PolicyStore
from controller.reconciler import Reconciler
from controller.rollout.machine import Judgement
from controller.rollout.state import Phase, RolloutState
from controller.routers import ROUTERS
from controller.telemetry import Telemetry
from tests.fakes import TEST_SEALER, FakeAnalyzer
from tests.routers.deployment_world import NAME, NS, DeploymentSim, template

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Story:
    def __init__(self, tmp_path: Path, judgement: Judgement | None = None) -> None:
        (tmp_path / "fast.yaml").write_text((ROOT / "policies" / "fast.yaml").read_text())
        self.sim = DeploymentSim()
        self.now = T0
        self.events = FakeEvents()
        self.analyzer = FakeAnalyzer(judgement)
        self.reconciler = Reconciler(
            objects=self.sim.objects, routers=ROUTERS, policies=PolicyStore(tmp_path),
            analyzer=self.analyzer, events=self.events, telemetry=Telemetry(),
            sealer=TEST_SEALER, clock=lambda: self.now, children=self.sim.children)

    def tick(self, seconds: float = 30) -> RolloutState:
        self.now += timedelta(seconds=seconds)
        self.reconciler.run_once()
        self.sim.settle()
        return self.state()

    def state(self) -> RolloutState:
        return RolloutState.from_json(self.sim.obj["metadata"]["annotations"][STATE_ANNOTATION])

    def deploy(self, uri: str) -> None:
        """A template edit (D is paused since adoption: nothing rolls)."""
        self.sim.obj["spec"]["template"] = template(uri)
        self.sim.obj["metadata"]["generation"] += 1

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.events.recorded]


def stable_rs(sim: DeploymentSim) -> str:
    return next(rs["metadata"]["name"] for ref, rs in sim.others.items()
                if ref.resource.kind == "ReplicaSet"
                and rs["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
                and rs["status"].get("availableReplicas"))


def test_a_good_model_is_promoted_step_by_step_and_the_canary_removed(tmp_path: Path) -> None:
    story = Story(tmp_path, Judgement("pass", "fine"))
    assert story.tick().phase == Phase.SUCCEEDED
    assert story.sim.obj["spec"]["paused"] is True            # adoption paused D
    old = stable_rs(story.sim)
    story.deploy("s3://m/v2")
    assert story.tick().phase == Phase.PENDING
    assert story.sim.canary() is not None                     # right after the commit
    assert story.sim.weights() == {"churn": 90, "churn-canary": 10}
    phases, weights = [], []
    for _ in range(20):
        state = story.tick(60)
        phases.append(state.phase)
        weights.append(story.sim.weights())
        if state.phase == Phase.SUCCEEDED:
            break
    assert state.phase == Phase.SUCCEEDED, phases
    assert {"churn": 50, "churn-canary": 50} in weights
    assert {"churn": 0, "churn-canary": 100} in weights       # while D rolled
    assert Phase.PROMOTING in phases and "UnguardedDeploy" not in story.reasons()
    # D rolled to the new template (a new ReplicaSet), paused again; the route has one
    # backend again and the canary is gone.
    assert stable_rs(story.sim) != old and story.sim.obj["spec"]["paused"] is True
    story.tick()
    assert story.sim.weights() == {"churn": 100}
    story.tick()
    assert story.sim.canary() is None
    assert {"Promoting", "Promoted"} <= set(story.reasons())


def test_a_bad_model_is_rolled_back_and_the_deployment_keeps_its_pods(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.tick()
    old = stable_rs(story.sim)
    story.deploy("s3://m/bad")
    story.tick()
    story.tick()                                              # ready: step 1
    story.analyzer.judgement = Judgement("fail", "error-rate: canary 9% vs stable 1%")
    phases = [story.tick(60).phase for _ in range(4)]
    assert Phase.ROLLING_BACK in phases and phases[-1] == Phase.FAILED, phases
    story.tick()
    assert story.sim.canary() is None and story.sim.weights() == {"churn": 100}
    assert stable_rs(story.sim) == old and story.sim.obj["spec"]["paused"] is True
    reason = story.state().last_decision
    assert reason is not None and "canary 9% vs stable 1%" in reason.reason


def test_a_crash_between_the_commit_and_the_children_is_caught_up_not_a_hand_edit(
        tmp_path: Path) -> None:
    story = Story(tmp_path, Judgement("continue", "not yet"))
    story.tick()
    story.deploy("s3://m/v2")
    story.sim.children.fail_next = KubeError("connection reset", None)
    assert story.tick().phase == Phase.PENDING                 # committed; children not
    assert story.sim.canary() is None and story.sim.weights() == {"churn": 100}
    state = story.tick()
    assert story.sim.weights() == {"churn": 90, "churn-canary": 10}
    state = story.tick()
    assert state.phase in (Phase.WAITING_READY, Phase.PROGRESSING), state
    assert "Paused" not in story.reasons()


def test_a_hand_edit_of_the_route_pauses_and_is_never_written_back(tmp_path: Path) -> None:
    story = Story(tmp_path, Judgement("continue", "not yet"))
    story.tick()
    story.deploy("s3://m/v2")
    for _ in range(3):
        state = story.tick()
    assert state.phase == Phase.PROGRESSING
    refs = story.sim.route()["spec"]["rules"][0]["backendRefs"]
    refs[0]["weight"], refs[1]["weight"] = 60, 40              # kubectl edit
    state = story.tick()
    assert state.phase == Phase.PAUSED and state.pause is not None
    assert state.pause.reason == "manual-edit" and state.expected_percent == 40
    for _ in range(3):
        story.tick()
    assert story.sim.weights() == {"churn": 60, "churn-canary": 40}
    assert story.state().phase == Phase.PAUSED


@pytest.mark.parametrize("change", ["no-route", "two-routes"])
def test_a_deployment_whose_route_is_not_one_gets_an_unsupported_event(
        tmp_path: Path, change: str) -> None:
    from controller.routers.base import Ref
    from controller.routers.kserve_standard import HTTPROUTES
    from tests.routers.deployment_world import route

    story = Story(tmp_path)
    if change == "no-route":
        story.sim.others.pop(Ref(HTTPROUTES, NS, NAME))
    else:
        story.sim.others[Ref(HTTPROUTES, NS, "other")] = route("other")
    story.reconciler.run_once()
    story.reconciler.run_once()
    unsupported = [e for e in story.events.recorded if e["reason"] == "Unsupported"]
    assert len(unsupported) == 1 and unsupported[0]["warning"]
    assert ("no HTTPRoute in models" if change == "no-route" else "several routes") in (
        unsupported[0]["message"])
    assert story.sim.objects.patches == []                     # nothing written


def test_a_namespaces_routes_and_services_are_read_once_a_pass(tmp_path: Path) -> None:
    """However many Deployments a namespace holds, one pass lists its routes and Services
    once (the related reads are kept for the pass, and forgotten after a child write)."""
    from controller.routers.base import Ref
    from controller.routers.deployment_gateway import SERVICES
    from controller.routers.kserve_standard import HTTPROUTES
    from tests.routers.deployment_world import deployment, route, service

    story = Story(tmp_path)
    other = deployment()
    other["metadata"].update(name="other", uid="o-uid")
    other["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    other["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    story.sim.objects.objects[(NS, "other")] = other
    story.sim.others[Ref(SERVICES, NS, "other")] = service("other", {"app": "other"})
    story.sim.others[Ref(HTTPROUTES, NS, "other")] = route("other", backend="other")
    for _ in range(3):
        story.tick()                      # adopt, write the routes' digests
    story.sim.objects.reads.clear()
    story.reconciler.resync = timedelta(0)  # both read this pass, though nothing changed
    story.tick()
    lists = [r for r in story.sim.objects.reads if r.selector == ""]
    assert sorted(r.resource.plural for r in lists) == ["httproutes", "services"]


def test_a_deployment_unpaused_by_hand_mid_step_pauses_and_is_left_unpaused(
        tmp_path: Path) -> None:
    story = Story(tmp_path, Judgement("continue", "not yet"))
    story.tick()
    story.deploy("s3://m/v2")
    for _ in range(3):
        state = story.tick()
    assert state.phase == Phase.PROGRESSING
    story.sim.obj["spec"]["paused"] = False                 # kubectl rollout resume
    state = story.tick()
    assert state.phase == Phase.PAUSED and state.pause is not None
    assert state.pause.reason == "manual-edit"
    for _ in range(3):
        story.tick()
    assert story.sim.obj["spec"]["paused"] is False          # never fought
    assert story.sim.weights() == {"churn": 90, "churn-canary": 10}


def test_restore_previous_spec_writes_the_last_promoted_template_back_paused(
        tmp_path: Path) -> None:
    story = Story(tmp_path)
    (tmp_path / "fast.yaml").write_text((ROOT / "policies" / "fast.yaml").read_text().replace(
        "  onMissingData:", "  onFailure: {restorePreviousSpec: true}\n  onMissingData:"))
    story.tick()
    good = story.sim.obj["spec"]["template"]
    story.deploy("s3://m/bad")
    story.tick()
    story.tick()
    story.analyzer.judgement = Judgement("fail", "error-rate: canary 9% vs stable 1%")
    for _ in range(4):
        story.tick(60)
    assert {"RolledBack", "RestoringSpec"} <= set(story.reasons())
    assert story.sim.obj["spec"]["template"] == good and story.sim.obj["spec"]["paused"]
    state = story.tick()
    assert state.storage_uri == "s3://m/v1"          # a new rollout of the good model
    assert state.phase in (Phase.PENDING, Phase.WAITING_READY)
    assert "Superseded" not in story.reasons()
