"""``make demo``: a good model promoted step by step, a bad one rolled back, live.

Starts the world (real kube-apiserver, simulated KServe, model endpoints, real
Prometheus), runs the real controller as its own process with the controller's
service-account kubeconfig, deploys two models with ``rollwise deploy``'s semantics
(a plain predictor change: the admission webhook holds it at the first step), shows
each rollout live, and ends with a summary. I/O.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.state import Phase, RolloutState
from simulations.controller_process import ControllerProcess
from simulations.endpoints import Behaviour
from simulations.world import World, WorldConfig

NAMESPACE, NAME = "models", "churn"
V1, V2, V3 = ("s3://models/churn/v1", "s3://models/churn/v2", "s3://models/churn/v3")
GOOD = Behaviour(latency_median_ms=40, latency_sigma=0.3, error_rate=0.005)
BAD = Behaviour(latency_median_ms=40, latency_sigma=0.3, error_rate=0.06)
POLICY = Path(__file__).with_name("policy.yaml")
RPS = 150.0


@dataclass
class Outcome:
    model: str
    phase: str
    reason: str
    seconds: float
    steps: int


def _state(world: World) -> tuple[RolloutState | None, dict[str, Any]]:
    obj = world.get_isvc(NAMESPACE, NAME)
    raw = (obj["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
    return (RolloutState.from_json(raw) if raw else None), obj


def _table(world: World, model: str, started: float) -> Table:
    state, obj = _state(world)
    traffic = ((obj.get("status") or {}).get("components") or {}).get("predictor", {}) \
        .get("traffic") or []
    table = Table(title=f"rollout of {model}  ({time.monotonic() - started:.0f}s)",
                  expand=True)
    for column in ("phase", "step", "canaryTrafficPercent", "KServe traffic", "last verdict"):
        table.add_column(column, overflow="fold")
    split = ", ".join(f"{t.get('revisionName')}={t.get('percent')}%" for t in traffic)
    percent = obj["spec"]["predictor"].get("canaryTrafficPercent")
    table.add_row(str(state.phase) if state else "-", str(state.step + 1) if state else "-",
                  "-" if percent is None else str(percent), split,
                  (state.last_verdict or (state.last_decision.reason if state.last_decision
                                          else ""))[:160] if state else "")
    return table


def _wait_for(world: World, predicate: Any, timeout: float) -> RolloutState | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, _ = _state(world)
        if predicate(state):
            return state
        time.sleep(0.5)
    return None


def _roll_out(world: World, console: Console, model: str, timeout: float) -> Outcome:
    before, _ = _state(world)
    started = time.monotonic()
    world.patch_isvc(NAMESPACE, NAME, {"spec": {"predictor": {"model": {"storageUri": model}}}})
    state: RolloutState | None = None
    with Live(_table(world, model, started), console=console, refresh_per_second=4) as live:
        while time.monotonic() - started < timeout:
            state, _ = _state(world)
            live.update(_table(world, model, started))
            if state is not None and state.storage_uri == model and state.phase.terminal and (
                    before is None or state.id != before.id):
                break
            time.sleep(0.5)
    reason = (state.last_decision.reason if state and state.last_decision else "timed out")
    return Outcome(model, str(state.phase) if state else "none", reason,
                   time.monotonic() - started, (state.step + 1) if state else 0)


def run_demo(seed: int = 7, console: Console | None = None) -> int:
    console = console or Console()
    begun = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="rollwise-demo-"))
    policies = tmp / "policies"
    policies.mkdir()
    shutil.copy(POLICY, policies / "demo.yaml")
    config = WorldConfig(models={V1: GOOD, V2: GOOD, V3: BAD}, seed=seed, ready_delay=2.0)
    console.rule("Rollwise demo")
    console.print("starting the simulated world: kube-apiserver + etcd, simulated KServe, "
                  "model endpoints, Prometheus ...")
    try:
        with World(config) as world:
            console.print(f"  world up in {time.monotonic() - begun:.0f}s; "
                          f"Prometheus at {world.prometheus.url}")
            controller = ControllerProcess(world, policies, tmp / "controller.log")
            with controller:
                console.print(f"  controller running (log: {tmp / 'controller.log'})")
                world.create_isvc(NAMESPACE, NAME, V1, policy="demo")
                adopted = _wait_for(world, lambda s: s is not None and s.phase ==
                                    Phase.SUCCEEDED, 60)
                if adopted is None:
                    console.print("[red]the first model was never adopted[/red]")
                    console.print(controller.tail())
                    return 1
                console.print(f"  {V1} serves 100% and is the stable baseline")
                world.start_traffic(NAMESPACE, NAME, RPS, max_seconds=240)
                time.sleep(3)
                outcomes = [_roll_out(world, console, V2, 90),
                            _roll_out(world, console, V3, 60)]
            _summary(console, outcomes, time.monotonic() - begun)
            ok = outcomes[0].phase == "Succeeded" and outcomes[1].phase == "Failed"
            if not ok:
                console.print(controller.tail())
            return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(console: Console, outcomes: list[Outcome], total: float) -> None:
    table = Table(title=f"summary ({total:.0f}s in all)")
    for column in ("model", "outcome", "steps reached", "time", "why"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        colour = "green" if o.phase == "Succeeded" else "red"
        table.add_row(o.model, f"[{colour}]{o.phase}[/{colour}]", str(o.steps),
                      f"{o.seconds:.0f}s", o.reason)
    console.print(table)
    console.print(json.dumps([o.__dict__ for o in outcomes]), style="dim")
