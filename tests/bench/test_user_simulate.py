"""``rollwise simulate --policy``: the user's policy on the user's traffic, judged by the
controller's own analysis; bad input is a located error; a seed reproduces a run."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from controller.policy.loader import load_file, load_text
from controller.policy.yamldoc import parse
from simulations.benchmark import run, usersim
from simulations.benchmark.cli import simulate
from simulations.benchmark.scenarios import STABLE

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FAST = POLICIES / "fast.yaml"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
# fast.yaml's slow-requests check compares the share above 500 ms: give the service a tail
# that reaches it, as a service choosing that threshold would have.
TRAFFIC = ["--rps", "1000", "--p99", "450ms"]


def _simulate(tmp_path: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    result = CliRunner().invoke(simulate, ["--policy", str(FAST), *TRAFFIC, "--workers", "1",
                                           "--out", str(tmp_path), *args])
    data = (json.loads((tmp_path / "simulate-fast.json").read_text())
            if result.exit_code == 0 else {})
    return result, data


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="the plot needs matplotlib")
def test_policy_simulation_reports_promotion_false_rollbacks_and_detection(
        tmp_path: Path) -> None:
    result, data = _simulate(tmp_path, "--rollouts", "3", "--seed", "7",
                             "--regression", "errors=x5", "--regression", "p99=+20%")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "policy 'fast' on 1000 rps" in out and "p99 450ms" in out
    assert "false rollbacks (95% CI)" in out and "median exposure" in out
    assert "| errors=x5: error rate 0.5% -> 2.5% | 1000 |" in out
    assert "rollouts" in result.stderr                         # the progress bar
    good = data["goodCanary"][0]
    assert good["rps"] == 1000 and good["rollouts"] == 3
    assert set(good) >= {"promoted", "promoteMinutesMedian", "promoteMinutesP90",
                         "falseRollbacks", "falseRollbacksLow", "falseRollbacksHigh",
                         "inconclusive"}
    assert good["falseRollbacksLow"] <= good["falseRollbacks"] <= good["falseRollbacksHigh"]
    assert [r["regression"] for r in data["regressions"]] == ["errors=x5", "p99=+20%"]
    x5 = data["regressions"][0]
    assert x5["detected"] == 1.0 and x5["exposureMedian"] > 0      # x5 never slips through
    assert data["traffic"]["latency"]["p99"] == "450ms" and data["tickSeconds"] == 30
    assert (tmp_path / "simulate-fast.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_policy_file_is_a_located_error_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAST.read_text().replace("alpha: 0.05", "alpha: 0.9"))
    result = CliRunner().invoke(simulate, ["--policy", str(bad), "--rps", "10"])
    assert result.exit_code == 2
    assert f"{bad}:21:12: spec.analysis.alpha: Input should be less than or equal to 0.5, " \
        "got 0.9" in result.stderr
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("args", "message"), [
    (["--suite", "realistic"], "--suite: an option of the benchmark, not of --policy"),
    (["--regression", "errors=2"], "--regression: regression 'errors=2': the change is"),
    (["--p99", "50ms"], "--p99: p99 50ms must be above p50 80ms"),
    (["--tick", "20"], "--tick: interval 30 s must be a multiple of the tick 20 s"),
])
def test_bad_options_with_a_policy_exit_2_naming_the_option(args: list[str],
                                                           message: str) -> None:
    result = CliRunner().invoke(simulate, ["--policy", str(FAST), "--rps", "10", *args])
    assert result.exit_code == 2 and message in result.output


def test_traffic_options_need_a_policy() -> None:
    result = CliRunner().invoke(simulate, ["--cv", "0.5"])
    assert result.exit_code == 2 and "--cv: an option of --policy FILE" in result.output


def test_a_bad_traffic_file_names_line_field_and_value(tmp_path: Path) -> None:
    text = "rps: 100\nlatency: {p50: 80ms, p99: 40}\ndispersion: {cv: -1, sharde: 0}\n"
    document = parse(text, "traffic.yaml")[0]
    with pytest.raises(usersim.TrafficError) as caught:
        usersim.traffic_spec(document, {})
    assert caught.value.problems == [
        "traffic.yaml:2:27: latency.p99: a duration is text with a unit, e.g. 30s or 5m; "
        "got int 40",
        "traffic.yaml:3:18: dispersion.cv: Input should be greater than or equal to 0, got -1",
        "traffic.yaml:3:22: dispersion.sharde: unknown field 'sharde' (did you mean "
        "'shared'?)",
    ]


def test_options_override_the_traffic_file() -> None:
    document = parse("rps: [10, 100]\nerrorRate: 1%\ncoldStart: {duration: 2m}\n", "t.yaml")[0]
    spec = usersim.traffic_spec(document, {"--rps": (50,), "--cv": 0.0, "--p50": None})
    assert spec.rps == [50] and spec.error_rate == pytest.approx(0.01)
    assert spec.dispersion.cv == 0.0 and spec.cold_start.duration.total_seconds() == 120


def _rollouts(seed: int, regressions: tuple[str, ...], rollouts: int) -> list[run.Rollout]:
    policy, _ = usersim.simulable(load_file(FAST)[0].policy)
    spec = usersim.traffic_spec(None, {"--rps": (1000,), "--p99": "450ms",
                                       "--regression": regressions})
    tasks = usersim.policy_tasks(spec, policy, rollouts, seed, usersim.default_tick(policy))
    return run.run_all(usersim.run_policy_task, tasks, 1)


def test_the_same_seed_gives_the_same_results(tmp_path: Path) -> None:
    first = _rollouts(3, ("errors=x5",), 2)
    again = _rollouts(3, ("errors=x5",), 2)
    other = _rollouts(4, ("errors=x5",), 2)
    assert first == again                           # Rollout's runtime is not compared
    assert [r.exposure for r in first] != [r.exposure for r in other]


def test_a_larger_regression_is_detected_more_often_at_the_same_seed() -> None:
    results = _rollouts(11, ("errors=x1.2", "errors=x5"), 4)
    detected = {name: sum(r.outcome == run.ROLLED_BACK for r in results if r.scenario == name)
                for name in ("errors=x1.2", "errors=x5")}
    assert detected["errors=x5"] > detected["errors=x1.2"]


@pytest.mark.parametrize(("text", "metric", "size"), [
    ("errors=x2", "errors", 2.0), ("errors=+50%", "errors", 1.5),
    ("latency=x1.2", "latency", 1.2), ("p99=+20%", "p99", 1.2), ("p99=-10%", "p99", 0.9),
    ("drift=0.25", "drift", 0.25),
])
def test_regressions_parse(text: str, metric: str, size: float) -> None:
    r = usersim.parse_regression(text)
    assert r.metric == metric and r.size == pytest.approx(size)


@pytest.mark.parametrize("text", ["errors", "errors=2", "speed=x2", "errors=x0", "drift=big",
                                  "latency=+abc%"])
def test_malformed_regressions_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"regression '{text}'")):
        usersim.parse_regression(text)


@pytest.mark.parametrize("family", ["lognormal", "pareto"])
def test_the_stable_revision_has_the_given_p50_and_p99(family: str) -> None:
    spec = usersim.traffic_spec(None, {"--rps": (10,), "--p50": "100ms", "--p99": "900ms",
                                       "--latency-family": family})
    stable = spec.stable()
    assert stable.quantile(0.5) == pytest.approx(0.1)
    assert stable.quantile(0.99) == pytest.approx(0.9)
    tail = usersim.parse_regression("p99=+20%").canary(stable)
    assert tail.quantile(0.5) == pytest.approx(0.1)           # the tail only
    assert tail.quantile(0.99) == pytest.approx(1.08)


def test_defaults_are_the_benchmark_revision_under_production_conditions() -> None:
    spec = usersim.traffic_spec(None, {"--rps": (10,)})
    assert spec.stable().quantile(0.99) == pytest.approx(STABLE.quantile(0.99), rel=1e-3)
    c = spec.conditions()
    assert (c.errors.cv, c.latency.sd, c.cold_start.seconds) == (0.3, 0.1, 60.0)


def test_checks_the_simulation_cannot_draw_are_left_out_and_said() -> None:
    policy, notes = usersim.simulable(load_file(POLICIES / "drift.yaml")[0].policy)
    assert [c.name for c in policy.spec.analysis.checks] == ["prediction-drift-vs-stable",
                                                             "error-rate"]
    assert any("prediction-drift-vs-training" in n and "training histogram" in n
               for n in notes)
    assert any("pauses" in n for n in notes)


@pytest.mark.parametrize(("interval", "tick"), [("30s", 30.0), ("1m", 60.0), ("2m", 60.0),
                                                ("45s", 15.0), ("7s", 1.0)])
def test_the_tick_divides_the_policy_interval(interval: str, tick: float) -> None:
    policy = load_text(FAST.read_text().replace("interval: 30s", f"interval: {interval}"),
                       "policy.yaml")[0].policy
    assert usersim.default_tick(policy) == tick
    assert math.isclose(policy.spec.analysis.interval.total_seconds() / tick,
                        round(policy.spec.analysis.interval.total_seconds() / tick))

