"""``make demo``: a good model promoted step by step, a bad one rolled back, live.

Starts the world (real kube-apiserver, simulated KServe, model endpoints, real
Prometheus), runs the real controller as its own process with the controller's
service-account kubeconfig, deploys two models with ``rollwise deploy``'s semantics
(a plain predictor change: the admission webhook holds it at the first step), shows
each rollout live, and ends with a summary. I/O.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from controller.cli.table import Column, layout, wrap
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


LIVE_COLUMNS = (
    Column("phase", priority=9, min_width=11),
    Column("step", priority=5, align="right"),
    Column("canary%", priority=8, align="right"),
    Column("KServe traffic", priority=6, min_width=14, fit="wrap"),
    Column("last verdict", priority=7, min_width=20, fit="wrap", max_lines=4),
)
SUMMARY_COLUMNS = (
    Column("model", priority=9),
    Column("outcome", priority=10),
    Column("steps", priority=4, align="right"),
    Column("time", priority=5, align="right"),
    Column("why", priority=8, min_width=20, fit="wrap"),
)
OUTCOME_STYLE = {"promoted": "green", "rolled back": "red"}


def outcome_in_words(phase: str) -> str:
    """What happened to a model, in words: promoted, rolled back, ..."""
    return {"Succeeded": "promoted", "Failed": "rolled back",
            "Aborted": "rolled back (aborted)", "Superseded": "superseded"}.get(
                phase, f"not finished ({phase})")


@dataclass(frozen=True)
class Fitted:
    """A table laid out (controller.cli.table) for the width rich renders it at, so it
    never wraps into fragments, each row in its style; on a console that is not a
    terminal, every column at full width, nothing cut (and rich adds no colour)."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    styles: tuple[str, ...] = ()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        laid = layout(self.columns, self.rows,
                      options.max_width if console.is_terminal else None)
        title = wrap(self.title, options.max_width) if console.is_terminal else [self.title]
        for line in title:
            yield Text(line, style="bold", no_wrap=True, overflow="ignore")
        yield Text(laid.header, style="bold", no_wrap=True, overflow="ignore")
        for i, lines in enumerate(laid.rows):
            style = self.styles[i] if i < len(self.styles) else ""
            for line in lines:
                yield Text(line, style=style, no_wrap=True, overflow="ignore")


def _table(world: World, model: str, started: float) -> Fitted:
    state, obj = _state(world)
    traffic = ((obj.get("status") or {}).get("components") or {}).get("predictor", {}) \
        .get("traffic") or []
    prefix = f"{NAME}-predictor-"     # revision names differ only by their number
    split = ", ".join(f"{str(t.get('revisionName')).removeprefix(prefix)}={t.get('percent')}%"
                      for t in traffic)
    percent = obj["spec"]["predictor"].get("canaryTrafficPercent")
    verdict = (state.last_verdict or (state.last_decision.reason if state.last_decision
                                      else "")) if state else ""
    row = (str(state.phase) if state else "-", str(state.step + 1) if state else "-",
           "-" if percent is None else str(percent), split or "-", verdict or "-")
    return Fitted(f"rollout of {model}  ({time.monotonic() - started:.0f}s)", LIVE_COLUMNS,
                  (row,))


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
    # Live on a terminal; elsewhere (a pipe, a log) the last table only, nothing cropped.
    live = (Live(_table(world, model, started), console=console, refresh_per_second=4)
            if console.is_terminal else None)
    with live or contextlib.nullcontext():
        while time.monotonic() - started < timeout:
            state, _ = _state(world)
            if live is not None:
                live.update(_table(world, model, started))
            if state is not None and state.storage_uri == model and state.phase.terminal and (
                    before is None or state.id != before.id):
                break
            time.sleep(0.5)
    if live is None:
        console.print(_table(world, model, started), crop=False)
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
                console.print(f"  canary% is spec.predictor.canaryTrafficPercent; KServe "
                              f"traffic is status's split over revisions {NAME}-predictor-N")
                time.sleep(3)
                outcomes = [_roll_out(world, console, V2, 300),
                            _roll_out(world, console, V3, 120)]
            _summary(console, outcomes, time.monotonic() - begun)
            ok = outcomes[0].phase == "Succeeded" and outcomes[1].phase == "Failed"
            if not ok:
                console.print(controller.tail())
            return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary_table(outcomes: list[Outcome], total: float) -> Fitted:
    """The demo's last word: per model, promoted or rolled back, and why."""
    words = [outcome_in_words(o.phase) for o in outcomes]
    return Fitted(f"summary ({total:.0f}s in all)", SUMMARY_COLUMNS,
                  tuple((o.model, w, str(o.steps), f"{o.seconds:.0f}s", o.reason)
                        for o, w in zip(outcomes, words, strict=True)),
                  tuple(OUTCOME_STYLE.get(w, "yellow") for w in words))


def _summary(console: Console, outcomes: list[Outcome], total: float) -> None:
    console.print(summary_table(outcomes, total), crop=False)
    console.print(json.dumps([o.__dict__ for o in outcomes]), style="dim", soft_wrap=True)
