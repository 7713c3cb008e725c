"""Simulate whole rollouts under each judge, summarise them, write the table and the plot.

A rollout follows the benchmark policy's schedule as the state machine does: after each
1-minute interval the judge decides; FAIL rolls back; PASS advances once the step has
lasted its minimum duration and served its minimum canary requests; a step that has not
advanced by the inconclusive deadline ends the rollout as inconclusive (a human would
be asked). The last step (100%) is the promotion.

Every interval's traffic comes from ``interval_rng(seed, scenario, rps, rollout,
minute)``, so all judges see the same requests for as long as they make the same
decisions (common random numbers). Work is spread over processes by chunks of rollouts.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from controller.analysis import Outcome
from controller.policy.model import RolloutPolicy
from simulations.benchmark.judges import JUDGES, Judge, StepLog, make_judge
from simulations.benchmark.scenarios import (
    Scenario,
    acceptable_limits,
    benchmark_policy,
    describe,
    draw_interval,
    interval_rng,
    scenarios,
)

SCENARIOS = ("aa", "errors", "latency", "drift")
RPS = (10, 100, 1000)
ROLLED_BACK, PROMOTED, INCONCLUSIVE = "rolled-back", "promoted", "inconclusive"


@dataclass(frozen=True)
class Schedule:
    """The policy's steps as minutes and request counts."""

    weights: tuple[int, ...]
    min_minutes: tuple[int, ...]
    min_requests: tuple[int, ...]
    deadline_minutes: int

    @staticmethod
    def of(policy: RolloutPolicy) -> Schedule:
        spec = policy.spec
        interval = spec.analysis.interval.total_seconds()
        n = len(spec.steps) - 1
        return Schedule(
            weights=tuple(s.weight for s in spec.steps),
            min_minutes=tuple(math.ceil(spec.min_duration(i).total_seconds() / interval)
                              for i in range(n)),
            min_requests=tuple(spec.min_requests(i) for i in range(n)),
            deadline_minutes=math.ceil(spec.on_inconclusive.deadline.total_seconds() / interval),
        )


@dataclass(frozen=True)
class Rollout:
    judge: str
    scenario: str
    rps: int
    index: int
    outcome: str
    minutes: int
    exposure: int         # requests the canary served until the rollout ended
    weight: int           # the canary's weight when it ended


def simulate_rollout(judge: Judge, scenario: Scenario, key: int, rps: int, index: int,
                     seed: int, schedule: Schedule) -> Rollout:
    """One rollout from the first step to promotion, rollback or an inconclusive step."""
    steps = [StepLog(schedule.weights[0])]
    exposure = 0
    minute = 0
    last = len(schedule.weights) - 2

    def done(outcome: str) -> Rollout:
        return Rollout(judge.name, scenario.name, rps, index, outcome, minute, exposure,
                       steps[-1].weight)

    while True:
        minute += 1
        step = len(steps) - 1
        canary, stable = draw_interval(interval_rng(seed, key, rps, index, minute), rps,
                                       steps[-1].weight, scenario)
        steps[-1].record(canary, stable)
        exposure += canary.requests
        outcome = judge.decide(steps, final=step == last)
        if outcome == Outcome.FAIL:
            return done(ROLLED_BACK)
        current = steps[-1]
        if (outcome == Outcome.PASS and len(current.minutes) >= schedule.min_minutes[step]
                and current.canary.requests >= schedule.min_requests[step]):
            if step == last:
                return done(PROMOTED)
            steps.append(StepLog(schedule.weights[step + 1]))
        elif len(current.minutes) >= schedule.deadline_minutes:
            return done(INCONCLUSIVE)


@dataclass(frozen=True)
class Task:
    judge: str
    scenario: str
    rps: int
    start: int
    stop: int
    seed: int


@cache
def _policy() -> RolloutPolicy:
    return benchmark_policy()


def run_task(task: Task) -> list[Rollout]:
    policy = _policy()
    schedule = Schedule.of(policy)
    scenario = scenarios()[task.scenario]
    key = SCENARIOS.index(task.scenario) if task.scenario in SCENARIOS else 99
    return [simulate_rollout(make_judge(task.judge, scenario, policy), scenario, key, task.rps,
                             i, task.seed, schedule)
            for i in range(task.start, task.stop)]


def tasks(seed: int, rollouts: int, scenario_names: Sequence[str], rps: Sequence[int],
          judges: Sequence[str], chunk: int = 50) -> list[Task]:
    out = [Task(j, s, r, start, min(start + chunk, rollouts), seed)
           for s in scenario_names for r in rps for j in judges
           for start in range(0, rollouts, chunk)]
    # Slow judges and long (A/A, low-traffic) rollouts first, so the pool ends together.
    weight = {"rollwise-strict": 0, "rollwise": 1, "rollwise-slo": 1, "rollwise-lenient": 2,
              "kayenta": 3}
    return sorted(out, key=lambda t: (weight.get(t.judge, 4), t.scenario != "aa", t.rps))


def run(task_list: Sequence[Task], workers: int,
        progress: Callable[[int], None] = lambda n: None) -> list[Rollout]:
    """Run the tasks on ``workers`` processes (in this process when 1)."""
    results: list[Rollout] = []
    if workers <= 1:
        for t in task_list:
            chunk = run_task(t)
            results += chunk
            progress(len(chunk))
        return results
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for chunk in pool.imap_unordered(run_task, task_list):
            results += chunk
            progress(len(chunk))
    return results


# --- summaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    scenario: str
    rps: int
    judge: str
    rollouts: int
    rolled_back: float
    rolled_back_low: float        # Wilson 95% interval
    rolled_back_high: float
    promoted: float
    inconclusive: float
    before_half: float            # rolled back while the canary had less than 50%
    exposure_mean: float          # canary requests before rollback (rolled-back runs)
    exposure_median: float
    promote_minutes_median: float
    promote_minutes_mean: float


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(results: Iterable[Rollout]) -> list[Summary]:
    groups: dict[tuple[str, int, str], list[Rollout]] = defaultdict(list)
    for r in results:
        groups[(r.scenario, r.rps, r.judge)].append(r)
    out = []
    for (scenario, rps, judge), rs in groups.items():
        n = len(rs)
        back = [r for r in rs if r.outcome == ROLLED_BACK]
        promoted = [r for r in rs if r.outcome == PROMOTED]
        low, high = wilson(len(back), n)
        out.append(Summary(
            scenario, rps, judge, n, len(back) / n, low, high, len(promoted) / n,
            sum(r.outcome == INCONCLUSIVE for r in rs) / n,
            sum(r.weight < 50 for r in back) / n,
            statistics.fmean(r.exposure for r in back) if back else math.nan,
            statistics.median(r.exposure for r in back) if back else math.nan,
            statistics.median(r.minutes for r in promoted) if promoted else math.nan,
            statistics.fmean(r.minutes for r in promoted) if promoted else math.nan,
        ))
    order = {s: i for i, s in enumerate(SCENARIOS)}
    jorder = {j: i for i, j in enumerate(JUDGES)}
    return sorted(out, key=lambda s: (order.get(s.scenario, 9), s.rps, jorder.get(s.judge, 9)))


def write_csv(summaries: Sequence[Summary], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(summaries[0])))
        writer.writeheader()
        for s in summaries:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v)
                             for k, v in asdict(s).items()})


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _one(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def _exposure_ratio(s: Summary, reference: dict[tuple[str, int], float]) -> float:
    ref = reference.get((s.scenario, s.rps), math.nan)
    if s.scenario == "aa" or math.isnan(ref) or ref <= 0:
        return math.nan
    return s.exposure_mean / ref


def _times(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}x"


def table(summaries: Sequence[Summary]) -> str:
    """The results as a markdown table."""
    oracle = {(s.scenario, s.rps): s.exposure_mean for s in summaries if s.judge == "oracle"}
    floor = {(s.scenario, s.rps): s.exposure_mean for s in summaries
             if s.judge == "policy-oracle"}
    lines = [
        "| scenario | rps | judge | rolled back (95% CI) | promoted | inconclusive | "
        "rolled back before 50% | bad-canary exposure: mean (median) requests | x oracle | "
        "x policy-oracle | minutes to promotion: median (mean) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        bad = s.scenario != "aa"
        lines.append(
            f"| {s.scenario} | {s.rps} | {s.judge} | {_pct(s.rolled_back)} "
            f"({_pct(s.rolled_back_low)}-{_pct(s.rolled_back_high)}) | {_pct(s.promoted)} | "
            f"{_pct(s.inconclusive)} | {_pct(s.before_half) if bad else '-'} | "
            + (f"{_num(s.exposure_mean)} ({_num(s.exposure_median)})" if bad else "-")
            + f" | {_times(_exposure_ratio(s, oracle))} | {_times(_exposure_ratio(s, floor))} | "
            f"{_num(s.promote_minutes_median)} ({_one(s.promote_minutes_mean)}) |"
        )
    return "\n".join(lines)


def _find(summaries: Sequence[Summary], scenario: str, rps: int, judge: str) -> Summary | None:
    for s in summaries:
        if (s.scenario, s.rps, s.judge) == (scenario, rps, judge):
            return s
    return None


def _mean_exposure(summaries: Sequence[Summary], scenario: str, rps: int, judge: str) -> float:
    found = _find(summaries, scenario, rps, judge)
    return found.exposure_mean if found else math.nan


def floors(summaries: Sequence[Summary]) -> list[str]:
    """Where the exposure target is out of reach for any valid judge of the policy: the
    policy-oracle's exposure over the oracle's, per scenario and rate."""
    parts = []
    for s in summaries:
        if s.judge != "policy-oracle" or s.scenario == "aa":
            continue
        o = _mean_exposure(summaries, s.scenario, s.rps, "oracle")
        if not math.isnan(o) and not math.isnan(s.exposure_mean):
            parts.append(f"{s.scenario}@{s.rps} {s.exposure_mean / o:.1f}x")
    if not parts:
        return []
    return ["Floor set by the policy: the policy-oracle (which knows the answer but must not "
            "roll back a canary the policy accepts) needs this many times the oracle's "
            "exposure: " + ", ".join(parts) + ". Where it is above 1.5x, no valid judge of "
            "this policy can meet the 1.5x target; the margin the policy grants "
            f"({acceptable_limits(_policy())}) is what separates the two oracles.", ""]


def targets(summaries: Sequence[Summary], alpha: float) -> list[str]:
    """The brief's targets with the measured numbers, for each Rollwise variant run."""
    variants = [j for j in ("rollwise", "rollwise-slo", "rollwise-strict", "rollwise-lenient")
                if any(s.judge == j for s in summaries)]
    rates = sorted({s.rps for s in summaries})
    bad = [s for s in SCENARIOS[1:] if any(x.scenario == s for x in summaries)]
    lines: list[str] = floors(summaries)

    def mark(flags: list[bool]) -> str:
        return "no data" if not flags else "met" if all(flags) else (
            "partly met" if any(flags) else "NOT met")

    for judge in variants:
        lines.append(f"`{judge}`:")
        aa = [x for r in rates if (x := _find(summaries, "aa", r, judge))]
        lines.append("- A/A false rollbacks <= alpha: " + ", ".join(
            f"{x.rps} rps {_pct(x.rolled_back)} ({_pct(x.rolled_back_low)}-"
            f"{_pct(x.rolled_back_high)}, {x.rollouts} rollouts)" for x in aa)
            + f": {mark([x.rolled_back <= alpha for x in aa])}")
        e100 = _find(summaries, "errors", 100, judge)
        if e100:
            lines.append(f"- 0.5% -> 1% errors at 100 rps rolled back before 50%: "
                         f"{_pct(e100.before_half)} (>= 95%): "
                         f"{mark([e100.before_half >= 0.95])}")
        oracle_flags: list[bool] = []
        oracle_parts: list[str] = []
        floor_parts: list[str] = []
        flagger_flags: list[bool] = []
        flagger_parts: list[str] = []
        for scenario in bad:
            for r in rates:
                x = _find(summaries, scenario, r, judge)
                if not x or math.isnan(x.exposure_mean):
                    continue
                o = _mean_exposure(summaries, scenario, r, "oracle")
                po = _mean_exposure(summaries, scenario, r, "policy-oracle")
                if not math.isnan(o):
                    ratio = x.exposure_mean / o
                    oracle_flags.append(ratio <= 1.5)
                    floor = f" (floor {po / o:.1f}x)" if not math.isnan(po) else ""
                    oracle_parts.append(f"{scenario}@{r} {ratio:.1f}x{floor}")
                if not math.isnan(po):
                    floor_parts.append(f"{scenario}@{r} {x.exposure_mean / po:.1f}x")
                f = _find(summaries, scenario, r, "flagger")
                if f and f.rolled_back >= 0.5 and not math.isnan(f.exposure_mean):
                    ratio = f.exposure_mean / x.exposure_mean
                    flagger_flags.append(ratio >= 5)
                    below = (f" (needs < {_num(f.exposure_mean / 5)} requests, fewer than the "
                             f"oracle's {_num(o)})"
                             if ratio < 5 and not math.isnan(o) and f.exposure_mean / 5 < o
                             else "")
                    flagger_parts.append(f"{scenario}@{r} {ratio:.1f}x{below}")
                elif f:
                    flagger_parts.append(f"{scenario}@{r} flagger catches only "
                                         f"{_pct(f.rolled_back)}")
        if oracle_parts:
            lines.append("- exposure <= 1.5x the oracle's: " + ", ".join(oracle_parts)
                         + f": {mark(oracle_flags)}")
        if floor_parts:
            lines.append("- exposure over the policy-oracle's (the cost of not knowing which "
                         "check regressed, nor by how much): " + ", ".join(floor_parts))
        if flagger_parts:
            lines.append("- exposure >= 5x smaller than Flagger's: " + ", ".join(flagger_parts)
                         + f": {mark(flagger_flags)}")
        promote_flags: list[bool] = []
        promote_parts: list[str] = []
        for r in rates:
            x, f = _find(summaries, "aa", r, judge), _find(summaries, "aa", r, "flagger")
            if x and f:
                promote_flags.append(not math.isnan(x.promote_minutes_median)
                                     and x.promote_minutes_median <= f.promote_minutes_median
                                     and x.promoted >= 0.95)
                promote_parts.append(
                    f"{r} rps {_num(x.promote_minutes_median)} min, {_pct(x.promoted)} promoted "
                    f"(flagger {_num(f.promote_minutes_median)} min, {_pct(f.promoted)})")
        if promote_parts:
            lines.append("- time to promote a good canary <= Flagger's: "
                         + "; ".join(promote_parts) + f": {mark(promote_flags)}")
        lines.append("")
    return lines


def markdown(summaries: Sequence[Summary], *, seed: int, rollouts: int, seconds: float,
             workers: int, command: str) -> str:
    policy = _policy()
    schedule = Schedule.of(policy)
    alpha = policy.spec.analysis.alpha
    checks = ", ".join(f"{c.name} ({c.kind})" for c in policy.spec.analysis.checks)
    parts = [
        "# Rollwise canary-analysis benchmark",
        "",
        f"Reproduce: `{command}` (seed {seed}, {rollouts} rollouts per scenario, rate and "
        f"judge; {seconds / 60:.1f} minutes on {workers} worker processes).",
        "",
        "Setup. Steps " + "/".join(map(str, schedule.weights)) + f"% with at least "
        f"{schedule.min_minutes[0]} one-minute intervals and {schedule.min_requests[0]} canary "
        f"requests per step; a step that has not passed after {schedule.deadline_minutes} "
        "minutes is inconclusive (the rollout would pause for a human). Every judge runs on "
        "the same schedule and the same random streams. Rollwise uses the policy's checks "
        f"[{checks}], alpha {alpha:g}; the step before 100% needs the non-inferiority "
        "certificate, earlier steps pass on absence of evidence of harm "
        "(`rollwise-strict`: the certificate at every step; "
        "`rollwise-lenient`: never, as Flagger and Kayenta; `rollwise-slo`: the default "
        "rule with the Flagger-style judge's SLOs as absolute guards, maxRate 1% and "
        "maxLatency 500ms, which can also certify the canary). " + describe(),
        "",
        "`rolled back` is the false-rollback rate in the `aa` rows and the detection rate "
        "elsewhere. Exposure is the number of requests the bad canary served before it was "
        "rolled back, over the rollouts that rolled it back (so it flatters a judge that "
        "rolls back early and often: read it with the A/A row); `x oracle` divides by the "
        "oracle SPRT's mean exposure at the same rate. The oracle knows both the stable and "
        "the bad revision exactly; in the `aa` rows it tests the three regressions at "
        "alpha/3 each and promotes only once it has accepted all three. `policy-oracle` is "
        "the same SPRT with the worst canary the policy accepts as its null "
        f"({acceptable_limits(policy)}) instead of the stable revision: no valid judge of "
        "the policy can beat it, and `x policy-oracle` divides by its exposure.",
        "",
        table(summaries),
        "",
        "## Targets",
        "",
        *targets(summaries, alpha),
        "",
        "![benchmark](benchmark.png)",
        "",
    ]
    return "\n".join(parts)


def plot(summaries: Sequence[Summary], path: Path, alpha: float) -> None:
    """Four panels: A/A false rollbacks, exposure on the error regression, detection of
    each regression, time to promote a good canary. Needs matplotlib."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    judges = [j for j in JUDGES if any(s.judge == j for s in summaries)]
    rps = sorted({s.rps for s in summaries})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    width = 0.8 / max(len(judges), 1)

    def bars(ax: Any, scenario: str, value: Callable[[Summary], float],
             note: Callable[[Summary], str] | None = None) -> None:
        for k, j in enumerate(judges):
            xs = [i + k * width for i in range(len(rps))]
            found = [_find(summaries, scenario, r, j) for r in rps]
            ys = [value(s) if s else math.nan for s in found]
            ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width, label=j)
            for x, y, s in zip(xs, ys, found, strict=True):
                if note and s:
                    ax.annotate(note(s), (x, 0 if math.isnan(y) else y), ha="center",
                                va="bottom", fontsize=6, rotation=90,
                                xytext=(0, 2), textcoords="offset points")
        ax.set_xticks([i + width * (len(judges) - 1) / 2 for i in range(len(rps))],
                      [f"{r} rps" for r in rps])
        ax.margins(y=0.15)

    ax = axes[0][0]
    bars(ax, "aa", lambda s: 100 * s.rolled_back)
    ax.axhline(100 * alpha, color="black", linestyle="--", linewidth=1, label=f"alpha {alpha:g}")
    ax.set_title("A/A: false rollbacks (%)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    bars(ax, "errors", lambda s: s.exposure_mean, lambda s: f"{100 * s.rolled_back:.0f}%")
    if any(s.scenario == "errors" and s.exposure_mean > 0 for s in summaries):
        ax.set_yscale("log")
    ax.set_title("errors 0.5%→1%: requests before rollback (mean; label: % caught)",
                 fontsize=10)
    ax = axes[1][0]
    bad = [s for s in SCENARIOS if s != "aa" and any(x.scenario == s for x in summaries)]
    labels = [f"{s}\n{r}" for s in bad for r in rps]
    for k, j in enumerate(judges):
        ys = []
        for s in bad:
            for r in rps:
                x = _find(summaries, s, r, j)
                ys.append(100 * x.rolled_back if x else math.nan)
        ax.bar([i + k * width for i in range(len(labels))], ys, width, label=j)
    ax.set_xticks([i + width * (len(judges) - 1) / 2 for i in range(len(labels))], labels,
                  fontsize=7)
    ax.set_title("bad canaries rolled back (%)")
    ax = axes[1][1]
    bars(ax, "aa", lambda s: s.promote_minutes_median, lambda s: f"{100 * s.promoted:.0f}%")
    ax.set_title("A/A: minutes to promotion (median; label: % promoted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
