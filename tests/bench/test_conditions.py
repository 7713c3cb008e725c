"""The realistic traffic: generators with the stated laws, common random numbers under
every condition, oracles that know the time profile, the realistic suite end to end.

Statistical checks use many draws and a tolerance of five standard errors estimated from
the draws themselves (batch means), and each also asserts that this tolerance is a small
fraction of the target: a generator off by more than that fraction cannot pass.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.typing import NDArray
from scipy import integrate, stats

from controller.analysis import HistogramCounts, Outcome
from simulations.benchmark import judges as judges_module
from simulations.benchmark import report, run
from simulations.benchmark.cli import output_stem, simulate
from simulations.benchmark.conditions import (
    ColdStart,
    Conditions,
    Dispersion,
    Diurnal,
    HeavyTail,
    Jitter,
    RolloutTraffic,
)
from simulations.benchmark.judges import (
    Judge,
    OracleJudge,
    StepLog,
    counts_for,
    make_judge,
    oracle_statistics,
)
from simulations.benchmark.scenarios import (
    LATENCY_BOUNDS_S,
    STABLE,
    Scenario,
    Traffic,
    benchmark_policy,
    feature_metrics,
    latency_probabilities,
    regressions,
    scenarios,
    slo_latency,
    slo_policy,
    twelve_check_policy,
)
from simulations.benchmark.suites import (
    LEAK_SECONDS,
    MIDSTEP_ONSET_SECONDS,
    SUITES,
    cases,
)

AA = scenarios()["aa"]


def _traffic(conditions: Conditions, scenario: Scenario = AA, index: int = 0,
             rps: float = 1000.0, tick: float = 60.0) -> RolloutTraffic:
    return RolloutTraffic(conditions.apply(scenario), conditions, 11, (7, int(rps), index), rps,
                          tick)


def _close(values: NDArray[np.float64], statistic: Callable[[NDArray[np.float64]], float],
           target: float, max_relative: float, batches: int = 50) -> None:
    """``statistic`` of the draws is within five batch-means standard errors of
    ``target``, and that tolerance is below ``max_relative`` of the target."""
    estimate = statistic(values)
    parts = [statistic(b) for b in np.array_split(values, batches)]
    tolerance = 5 * float(np.std(parts, ddof=1)) / math.sqrt(batches)
    assert tolerance < max_relative * abs(target), (tolerance, target)
    assert abs(estimate - target) < tolerance, (estimate, target, tolerance)


def _cv(x: NDArray[np.float64]) -> float:
    return float(np.std(x[:, 0], ddof=1) / np.mean(x[:, 0]))


def _mean(x: NDArray[np.float64]) -> float:
    return float(np.mean(x[:, 0]))


def _corr(x: NDArray[np.float64]) -> float:
    return float(np.corrcoef(x[:, 0], x[:, 1])[0, 1])


@pytest.mark.parametrize("family, cv, shared", [
    ("gamma", 0.3, 0.0), ("gamma", 1.0, 0.0), ("gamma", 1.0, 1.0), ("gamma", 1.0, 0.5),
    ("lognormal", 0.3, 0.0), ("lognormal", 1.0, 0.5)])
def test_error_rate_effects_have_mean_one_the_cv_and_the_correlation(
        family: str, cv: float, shared: float) -> None:
    traffic = _traffic(Conditions(errors=Dispersion(cv, shared, family)))
    effects = np.asarray([traffic.period_effects(p) for p in range(40_000)])
    canary, stable = effects[:, [0, 1]], effects[:, [1, 0]]
    for side in (canary, stable):
        _close(side, _mean, 1.0, 0.03)
        _close(side, _cv, cv, 0.1)
    if shared == 1.0:
        assert np.array_equal(effects[:, 0], effects[:, 1])    # one shock for both
    elif shared == 0.0:
        assert abs(_corr(canary)) < 0.03                        # 6 standard errors
    else:
        _close(canary, _corr, shared, 0.2)
    # No latency jitter was asked for: the latency factors stay 1.
    assert np.all(effects[:, 2:] == 1.0)


@pytest.mark.parametrize("sd, shared", [(0.1, 0.0), (0.2, 0.0), (0.2, 0.7)])
def test_latency_jitter_is_lognormal_with_the_log_sd_and_the_correlation(
        sd: float, shared: float) -> None:
    traffic = _traffic(Conditions(latency=Jitter(sd, shared)))
    logs = np.log(np.asarray([traffic.period_effects(p)[2:] for p in range(40_000)]))
    assert abs(float(np.mean(logs))) < 5 * sd / math.sqrt(logs.size / 2)
    _close(logs, lambda x: float(np.std(x[:, 0], ddof=1)), sd, 0.05)
    _close(logs[:, [1, 0]], lambda x: float(np.std(x[:, 0], ddof=1)), sd, 0.05)
    if shared:
        _close(logs, _corr, shared, 0.1)
    else:
        assert abs(_corr(logs)) < 0.03


def test_overdispersion_reaches_the_drawn_error_counts() -> None:
    """Per minute, Var(errors) = E + E^2 cv^2 (binomial plus the effect's variance)."""
    cv = 0.3
    rows = []
    for index in range(3000):
        canary, stable, _ = _traffic(Conditions(errors=Dispersion(cv)), index=index).tick(
            1, 50, 0.0)
        rows.append((canary.errors, stable.errors))
    counts = np.asarray(rows, dtype=np.float64)

    def excess(x: NDArray[np.float64]) -> float:
        m = float(np.mean(x[:, 0]))
        return (float(np.var(x[:, 0], ddof=1)) - m) / (m * m)

    _close(counts, excess, cv * cv, 0.25)
    assert abs(_corr(counts)) < 0.1      # independent per revision


def test_effects_change_per_shock_period_not_per_tick() -> None:
    traffic = _traffic(Conditions(errors=Dispersion(1.0), latency=Jitter(0.2)), tick=10.0)
    factors = [(truth.canary[0].error_factor, truth.stable[0].latency_factor)
               for _, _, truth in (traffic.tick(k, 5, 0.0) for k in range(1, 19))]
    minutes = [factors[i:i + 6] for i in range(0, 18, 6)]
    assert all(len(set(m)) == 1 for m in minutes)           # constant within a minute
    assert len({m[0] for m in minutes}) == 3                 # new each minute
    # A shock period of 30 s splits a one-minute tick into two segments.
    half = _traffic(Conditions(errors=Dispersion(1.0), shock_seconds=30.0))
    truth = half.truth(60.0, 120.0, 0.0)
    assert [s.share for s in truth.canary] == [0.5, 0.5]
    assert truth.canary[0].error_factor == half.period_effects(2)[0]
    assert truth.canary[1].error_factor == half.period_effects(3)[0]


def test_cold_start_slows_the_canary_after_ready_and_after_each_step() -> None:
    cold = Conditions(cold_start=ColdStart(90.0, latency_factor=2.0, error_factor=3.0))
    traffic = _traffic(cold)

    def canary(k: int, step_start: float) -> list[tuple[float, float, float]]:
        return [(s.share, s.error_factor, s.latency_factor)
                for s in traffic.truth((k - 1) * 60.0, k * 60.0, step_start).canary]

    assert canary(1, 0.0) == [(1.0, 3.0, 2.0)]
    assert canary(2, 0.0) == [(0.5, 3.0, 2.0), (0.5, 1.0, 1.0)]
    assert canary(3, 0.0) == [(1.0, 1.0, 1.0)]
    assert canary(6, 300.0) == [(1.0, 3.0, 2.0)]             # new step, new pods
    assert all(s.latency_factor == 1.0 for s in traffic.truth(0.0, 60.0, 0.0).stable)
    once = _traffic(replace(cold, cold_start=replace(cold.cold_start, every_step=False)))
    assert once.truth(300.0, 360.0, 300.0).canary[0].latency_factor == 1.0
    # The half-cold minute's law is the average of the two; its draws follow it.
    law = traffic.truth(60.0, 120.0, 0.0).law(AA.canary_at)
    assert law.error_rate == pytest.approx(2 * STABLE.error_rate)
    slow = latency_probabilities(2 * STABLE.latency_median_s, STABLE.latency_sigma)
    assert np.allclose(law.latency_probs, (slow + STABLE.latency_probs) / 2)
    rates = np.asarray([[c.errors / c.requests] for c, _, _ in (
        _traffic(cold, index=i).tick(2, 100, 0.0) for i in range(400))])
    _close(rates, _mean, 2 * STABLE.error_rate, 0.05)


def test_diurnal_load_integrates_the_sine_with_a_uniform_phase_per_rollout() -> None:
    d = Diurnal(0.5, 3600.0)
    for start, end, phase in ((0.0, 60.0, 1.0), (1234.0, 1294.0, 4.0), (0.0, 10.0, 0.0)):
        exact, _ = integrate.quad(lambda t: 100 * (1 + 0.5 * math.sin(
            2 * math.pi * t / 3600 + phase)), start, end)   # noqa: B023
        assert d.requests(100.0, start, end, phase) == pytest.approx(exact, rel=1e-9)
    assert d.requests(100.0, 0.0, 3600.0, 2.0) == pytest.approx(360_000.0)
    phases = [_traffic(Conditions(diurnal=d), index=i).phase() for i in range(2000)]
    assert stats.kstest(np.asarray(phases) / (2 * math.pi), "uniform").pvalue > 1e-3
    assert Diurnal().requests(10.0, 60.0, 120.0, 3.0) == 600.0     # no amplitude: flat


def test_heavy_tails_keep_the_median_and_have_the_stated_tails() -> None:
    for tail in (HeavyTail("pareto", 1.5), HeavyTail("lognormal", 1.5)):
        stable = tail.apply(STABLE)
        assert stable.tail_share(stable.latency_median_s) == pytest.approx(0.5)
        assert stable.tail_share(stable.quantile(0.99)) == pytest.approx(0.01)
        latency = Conditions(tail=tail).apply(scenarios()["latency"])
        assert latency.canary.latency_median_s == pytest.approx(
            1.2 * latency.stable.latency_median_s)
        assert latency.stable == stable
    pareto = HeavyTail("pareto", 1.5).apply(STABLE)
    scale = STABLE.latency_median_s / 2 ** (1 / 1.5)
    for b in (0.1, 1.0, 10.0):
        assert pareto.tail_share(b) == pytest.approx((scale / b) ** 1.5)
    i = LATENCY_BOUNDS_S.index(1.0)
    assert float(pareto.latency_probs[i + 1:].sum()) == pytest.approx((scale / 1.0) ** 1.5)
    lognormal = HeavyTail("lognormal", 1.5).apply(STABLE)
    assert lognormal.quantile(0.99) == pytest.approx(0.08 * math.exp(2.326348 * 1.5), rel=1e-6)
    # The service's latency SLO follows its p99: 500 ms for the benchmark's stable revision.
    assert slo_latency() == 0.5
    assert slo_latency(lognormal) == pytest.approx(0.5 * lognormal.quantile(0.99)
                                                   / STABLE.quantile(0.99))


def test_fast_lognormal_probabilities_are_scipys_bit_for_bit() -> None:
    bounds = np.asarray(LATENCY_BOUNDS_S)
    for median, sigma in ((0.08, 0.5), (0.096, 0.5), (0.0813, 1.5)):
        cdf = stats.lognorm.cdf(bounds, sigma, scale=median)
        probs = np.diff(np.concatenate(([0.0], cdf, [1.0])))
        assert np.array_equal(latency_probabilities(median, sigma), probs / probs.sum())


def test_the_regressions_in_time_follow_their_profiles() -> None:
    leak, midstep = cases()["leak"].world, cases()["midstep"].world
    assert leak.canary_at(0.0).error_rate == STABLE.error_rate
    assert leak.canary_at(600.0).error_rate == pytest.approx(0.01)
    assert leak.canary_at(LEAK_SECONDS).error_rate == pytest.approx(0.015)
    assert leak.canary_at(2 * LEAK_SECONDS).error_rate == pytest.approx(0.015)
    # The leak ramps over the time a good canary needs to be promoted; issue 15's over 1 h.
    assert run.Schedule.of(benchmark_policy()).fastest_seconds == LEAK_SECONDS
    slow = cases()["leak-slow"].world
    assert slow.canary_at(1800.0).error_rate == pytest.approx(0.01)
    traffic = _traffic(Conditions(), leak)
    law = traffic.truth(540.0, 600.0, 0.0).law(leak.canary_at)
    assert law.error_rate == pytest.approx(leak.canary_at(570.0).error_rate)
    assert midstep.canary_at(MIDSTEP_ONSET_SECONDS - 1).error_rate == STABLE.error_rate
    assert midstep.canary_at(MIDSTEP_ONSET_SECONDS).error_rate == 0.01
    assert cases()["gross"].world.canary.error_rate == pytest.approx(10 * STABLE.error_rate)
    # A tick must not straddle an onset (exposure counts whole ticks from it).
    late = replace(cases()["midstep"], name="late", scenario=replace(
        midstep, onset_seconds=450.0))
    with pytest.raises(ValueError, match=r"'late'.*450"):
        run.check_timing([late], 60.0, None)
    run.check_timing([late], 30.0, None)


def _minute(requests: int, errors: int) -> Traffic:
    t = Traffic.empty()
    t.requests, t.errors = requests, errors
    t.latency[0] = requests
    return t


def test_the_oracle_uses_the_true_rates_of_each_tick() -> None:
    leak, midstep = cases()["leak"].world, cases()["midstep"].world
    t = _minute(3000, 40)

    def expected(p0: float, p1: float) -> float:
        return 40 * math.log(p1 / p0) + 2960 * math.log((1 - p1) / (1 - p0))

    stat = oracle_statistics("errors", leak, STABLE)
    truth = _traffic(Conditions(), leak).truth(540.0, 600.0, 0.0)
    assert stat.llr(t, truth) == pytest.approx(expected(0.005, leak.canary_at(570.0).error_rate))
    stat = oracle_statistics("errors", midstep, STABLE)
    before = _traffic(Conditions(), midstep).truth(420.0, 480.0, 0.0)
    after = _traffic(Conditions(), midstep).truth(480.0, 540.0, 0.0)
    assert stat.llr(t, before) == 0.0           # no regression yet: no evidence either way
    assert stat.llr(t, after) == pytest.approx(expected(0.005, 0.01))
    # Under overdispersion the oracle applies the canary's realised effect to both rates.
    shocked = _traffic(Conditions(errors=Dispersion(1.0)))
    truth = shocked.truth(0.0, 60.0, 0.0)
    f = shocked.period_effects(0)[0]
    stat = oracle_statistics("errors", scenarios()["errors"], STABLE)
    assert stat.llr(t, truth) == pytest.approx(expected(0.005 * f, 0.01 * f))


@dataclass
class _Blind:
    """The oracle without the truth: Wald's SPRT as if every request were independent."""

    inner: OracleJudge
    name: str = "blind-oracle"

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        blind = StepLog(steps[-1].weight)
        canary, stable = steps[-1].ticks[-1]
        blind.record(canary, stable)
        return self.inner.decide([*steps[:-1], blind], final=final)


def _false_rollbacks(case: str, judge: Callable[[], Judge], n: int, rps: int = 1000) -> float:
    c = cases()[case]
    schedule = run.Schedule.of(c.rollout_policy)
    outcomes = [run.simulate_rollout(judge(), c, rps, i, 5, schedule).outcome for i in range(n)]
    return sum(o == run.ROLLED_BACK for o in outcomes) / n


def test_the_oracle_stays_valid_under_overdispersion_where_an_iid_sprt_does_not() -> None:
    """Knowing each period's effects, the oracle's likelihood is the true one (measured:
    1.0% and 0.3% false rollbacks over 300 rollouts); blind to them, the same SPRT rolls
    back 20% and 30%."""
    for name in ("aa-cv1", "aa-jitter0.2"):
        world = cases()[name].world
        assert _false_rollbacks(name, lambda w=world: OracleJudge(w, 0.05), 150) <= 0.05
    world = cases()["aa-jitter0.2"].world
    assert _false_rollbacks("aa-jitter0.2", lambda: _Blind(OracleJudge(world, 0.05)),
                            150) >= 0.15


@dataclass
class _Recorder:
    """A judge that notes what it saw at every tick, then lets ``inner`` decide."""

    inner: Judge
    name: str = "recorder"
    seen: list[tuple[Any, ...]] = field(default_factory=list)

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        canary, stable = steps[-1].ticks[-1]
        self.seen.append((len(steps), steps[-1].weight, canary.requests, canary.errors,
                          stable.errors, tuple(canary.latency), tuple(stable.predictions)))
        return self.inner.decide(steps, final=final)


def test_judges_see_the_same_traffic_under_every_condition_until_they_decide_apart() -> None:
    everything = Conditions(errors=Dispersion(1.0, 0.5), latency=Jitter(0.2, 0.3),
                            cold_start=ColdStart(90.0), diurnal=Diurnal(0.5, 3600.0),
                            tail=HeavyTail("pareto", 1.5))
    case = replace(cases()["aa-cv1"], name="crn", conditions=everything)
    policy = benchmark_policy()
    schedule = run.Schedule.of(policy)
    diverged = 0
    for index in range(6):
        a, b = (_Recorder(make_judge(j, case.world, policy)) for j in ("flagger", "oracle"))
        for judge in (a, b):
            run.simulate_rollout(judge, case, 1000, index, 3, schedule, tick_seconds=20.0)
        same = 0
        while (same < min(len(a.seen), len(b.seen))
               and a.seen[same][:2] == b.seen[same][:2]):
            assert a.seen[same] == b.seen[same]
            same += 1
        assert same >= 15                  # the first step lasts at least 5 minutes
        diverged += a.seen != b.seen
    assert diverged                        # the judges did decide apart somewhere
    # The effects of a period do not depend on which periods were asked for before.
    forward, backward = _traffic(everything), _traffic(everything)
    ahead = [forward.period_effects(p) for p in range(20)]
    assert ahead == [backward.period_effects(p) for p in reversed(range(20))][::-1]


def test_with_finer_ticks_flagger_and_kayenta_still_judge_each_minute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = _traffic(Conditions(), tick=10.0, rps=100.0)
    step = StepLog(50, tick_seconds=10.0)
    flagger = make_judge("flagger", AA, benchmark_policy())
    kayenta = make_judge("kayenta", AA, benchmark_policy())
    seen = []
    for k in range(1, 13):
        canary, stable, truth = traffic.tick(k, 50, 0.0)
        step.record(canary, stable, truth)
        seen.append((flagger.decide([step], final=False), kayenta.decide([step], final=False)))
    looks = [i for i, (f, _) in enumerate(seen) if f != Outcome.CONTINUE]
    assert looks == [5, 11]
    assert all(k == Outcome.CONTINUE for i, (_, k) in enumerate(seen) if i not in looks)
    minutes = step.windows(60.0)
    assert len(minutes) == 2
    assert minutes[1][0].requests == sum(c.requests for c, _ in step.ticks[6:])
    # Rollwise looks every tick, whatever its interval (the length of a block of evidence).
    calls: list[int] = []
    real = judges_module.judge

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(judges_module, "judge", counting)
    for interval, expected in ((None, 12), (10.0, 12)):
        calls.clear()
        rollwise = make_judge("rollwise", AA, run.policy_named("benchmark", interval))
        for k in range(1, 13):
            rollwise.decide([StepLog(50, 10.0, step.canary, step.stable, step.ticks[:k],
                                     step.truth[:k])], final=False)
        assert len(calls) == expected
    with pytest.raises(ValueError, match="tick"):
        run.check_timing([cases()["aa"]], 7.0, None)
    with pytest.raises(ValueError, match="interval"):
        run.check_timing([cases()["aa"]], 10.0, 25.0)


def test_a_minute_of_ten_second_ticks_serves_a_minute_of_requests() -> None:
    totals = np.asarray([[sum(c.requests + s.requests for c, s, _ in (
        _traffic(Conditions(), index=i, tick=10.0, rps=100.0).tick(k, 10, 0.0)
        for k in range(1, 7)))] for i in range(400)], dtype=np.float64)
    _close(totals, _mean, 6000.0, 0.01)


def test_the_twelve_check_policy_reads_three_series() -> None:
    policy = twelve_check_policy()
    kinds = [c.kind for c in policy.spec.analysis.checks]
    assert (kinds.count("ratio"), kinds.count("latency"), kinds.count("distribution")) == (
        3, 5, 4)
    assert feature_metrics(policy) == ("model_feature_age", "model_feature_amount")
    traffic = RolloutTraffic(AA, Conditions(), 1, (3, 100, 0), 100.0,
                             features=feature_metrics(policy))
    canary, stable, truth = traffic.tick(1, 50, 0.0)
    step = StepLog(50)
    step.record(canary, stable, truth)
    checks = {c.name: c for c in policy.spec.analysis.checks}
    age = counts_for(canary, checks["feature-age-psi"])
    assert isinstance(age, HistogramCounts)
    assert age.counts == tuple(float(x) for x in canary.features["model_feature_age"].tolist())
    preds = counts_for(canary, checks["prediction-js"])
    assert isinstance(preds, HistogramCounts)
    assert preds.counts == tuple(float(x) for x in canary.predictions.tolist())
    assert counts_for(canary, checks["feature-amount-js"]) != age
    assert sum(canary.features["model_feature_amount"]) == canary.requests
    # The SLO version guards the unguarded error-rate checks and the p99 check only.
    guarded = {c.name for c in slo_policy(policy).spec.analysis.checks
               if getattr(c, "max_rate", None) or getattr(c, "max_latency", None)}
    assert guarded == {"error-rate", "error-rate-tight", "error-rate-guarded", "p99-latency"}
    assert slo_policy().spec.analysis.checks == slo_policy(benchmark_policy()).spec.analysis.checks


def test_the_aa_oracle_tests_the_regressions_of_the_cases_stable_revision() -> None:
    world = cases()["aa-pareto1.5"].world
    oracle = OracleJudge(world, 0.05)
    alternatives = [stat.bad for _, stat in oracle.tests]
    assert alternatives == list(regressions(world.stable))
    assert all(a.stable.pareto_alpha == 1.5 for a in alternatives)
    # Its tail statistic is the share above the bucket of the heavy-tailed stable's p99.
    assert {stat.tail_index for _, stat in oracle.tests} == {LATENCY_BOUNDS_S.index(2.0)}


def test_the_realistic_suite_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(simulate, [
        "--suite", "realistic", "--rollouts", "2", "--rps", "1000", "--judges",
        "flagger,rollwise-slo", "--workers", "1", "--out", str(out), "--seed", "5"])
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert result.exit_code == (0 if has_matplotlib else 1), result.output
    text = (out / "benchmark-realistic.md").read_text()
    for case in SUITES["realistic"]:
        assert f"| {case} | 1000 | rollwise-slo |" in text
        assert f"| {case} | 1000 | oracle |" in text      # added for the exposure ratios
    assert "## Against issue 15" in text and "6.2-6.7%" in text
    assert "## Runtime per cell" in text and "| aa-cv1 | 1000 |" in text
    assert "--suite realistic" in text
    rows = (out / "benchmark-realistic.csv").read_text().splitlines()
    assert len(rows) == 1 + len(SUITES["realistic"]) * 4
    assert (out / "benchmark-realistic.png").exists() == has_matplotlib


def test_the_suite_and_timing_options_reject_what_they_cannot_run(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(simulate, ["--scenarios", "aa-cv1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "aa-cv1 not in the iid suite" in result.output
    result = runner.invoke(simulate, ["--tick", "7", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "must divide 60" in result.output


def test_the_policy_oracle_takes_no_evidence_while_a_leak_is_within_the_limit() -> None:
    """Early in the leak the canary is better than the worst acceptable (0.6%): a low
    error count then is no evidence that it is worse than the limit."""
    leak = cases()["leak"].world
    limit = replace(STABLE, error_rate=0.006)
    stat = oracle_statistics("errors", leak, limit)
    early = _traffic(Conditions(), leak).truth(0.0, 60.0, 0.0)   # 0.5% + a little
    assert stat.llr(_minute(3000, 5), early) == 0.0
    late = _traffic(Conditions(), leak).truth(600.0, 660.0, 0.0)
    assert stat.llr(_minute(3000, 40), late) > 0


def test_runs_with_other_suites_or_timings_write_their_own_files() -> None:
    assert output_stem("iid", 60.0, None) == "benchmark"
    assert output_stem("realistic", 60.0, None) == "benchmark-realistic"
    assert output_stem("realistic", 1.0, None) == "benchmark-realistic-tick1"
    assert output_stem("iid", 10.0, 10.0) == "benchmark-tick10-interval10"


def test_summaries_count_rollbacks_before_the_onset_and_the_runtime() -> None:
    def rollout(outcome: str, minutes: float, exposure: int, seconds: float) -> run.Rollout:
        return run.Rollout("rollwise", "midstep", 100, 0, outcome, minutes, exposure, 5,
                           seconds)

    (s,) = run.summarise([rollout(run.ROLLED_BACK, 8.0, 0, 0.01),      # before minute 8
                          rollout(run.ROLLED_BACK, 12.0, 900, 0.03),
                          rollout(run.PROMOTED, 20.0, 9000, 0.05),
                          rollout(run.INCONCLUSIVE, 40.0, 9000, 0.01)])
    assert s.before_onset == 0.25 and s.rolled_back == 0.5
    assert s.exposure_mean == 450.0
    assert s.ms_per_rollout == pytest.approx(25.0)


def test_summaries_survive_the_csv(tmp_path: Path) -> None:
    results = run.run(run.tasks(seed=2, rollouts=3, scenario_names=["gross"], rps=[100],
                                judges=["flagger", "oracle"], chunk=3), workers=1)
    summaries = run.summarise(results)
    report.write_csv(summaries, tmp_path / "s.csv")
    again = report.read_csv(tmp_path / "s.csv")
    assert [(s.scenario, s.rps, s.judge, s.rollouts) for s in again] == [
        (s.scenario, s.rps, s.judge, s.rollouts) for s in summaries]
    assert [s.exposure_mean for s in again] == pytest.approx(
        [s.exposure_mean for s in summaries])
