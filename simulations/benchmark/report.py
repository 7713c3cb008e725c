"""The benchmark's results as files: the markdown table, the targets, the plot, the CSV.

``markdown`` and ``plot`` write the i.i.d. report (simulations/results/benchmark.md);
``realistic_markdown`` and ``realistic_plot`` the realistic suite's
(benchmark-realistic.md), with issue 15's figures next to the measured ones and the
runtime of each cell; ``policy_plot`` the figure of ``rollwise simulate --policy``.
Called by ``cli``; reads only ``run.Summary`` values (``usersim.PolicyReport`` for
``policy_plot``). No I/O but the files it is asked to write.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from controller.cli.table import Column
from controller.cli.table import markdown as markdown_table
from simulations.benchmark.judges import JUDGES
from simulations.benchmark.run import SCENARIOS, Schedule, Summary, policy_named
from simulations.benchmark.scenarios import acceptable_limits, describe
from simulations.benchmark.suites import cases
from simulations.benchmark.usersim import PolicyReport


def read_csv(path: Path) -> list[Summary]:
    """The summaries ``write_csv`` wrote (to re-render a report or a plot without running
    the simulation again)."""
    types = {f.name: f.type for f in fields(Summary)}   # "str", "int", "float"

    def parsed(row: dict[str, str]) -> dict[str, Any]:
        return {k: v if types[k] == "str" else int(v) if types[k] == "int" else float(v)
                for k, v in row.items()}

    with path.open(newline="") as f:
        return [Summary(**parsed(row)) for row in csv.DictReader(f)]


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


def _bad(scenario: str) -> bool:
    return cases()[scenario].bad


def _exposure_ratio(s: Summary, reference: dict[tuple[str, int], float]) -> float:
    ref = reference.get((s.scenario, s.rps), math.nan)
    if not _bad(s.scenario) or math.isnan(ref) or ref <= 0:
        return math.nan
    return s.exposure_mean / ref


def _times(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}x"


# The results table's columns; on a terminal the first ones stay (rollwise simulate).
TABLE_COLUMNS = (
    Column("scenario", priority=10),
    Column("rps", priority=9, align="right"),
    Column("judge", priority=10),
    Column("rolled back (95% CI)", priority=8, align="right"),
    Column("promoted", priority=7, align="right"),
    Column("inconclusive", priority=3, align="right"),
    Column("rolled back before 50%", priority=5, align="right"),
    Column("bad-canary exposure: mean (median) requests", priority=4, align="right"),
    Column("x oracle", priority=6, align="right"),
    Column("x policy-oracle", priority=2, align="right"),
    Column("minutes to promotion: median (mean)", priority=1, align="right"),
)


def table_rows(summaries: Sequence[Summary]) -> list[tuple[str, ...]]:
    """The cells of the results table, one row per summary (``TABLE_COLUMNS``)."""
    oracle = {(s.scenario, s.rps): s.exposure_mean for s in summaries if s.judge == "oracle"}
    floor = {(s.scenario, s.rps): s.exposure_mean for s in summaries
             if s.judge == "policy-oracle"}
    rows: list[tuple[str, ...]] = []
    for s in summaries:
        bad = _bad(s.scenario)
        rows.append((
            s.scenario, str(s.rps), s.judge,
            f"{_pct(s.rolled_back)} ({_pct(s.rolled_back_low)}-{_pct(s.rolled_back_high)})",
            _pct(s.promoted), _pct(s.inconclusive), _pct(s.before_half) if bad else "-",
            f"{_num(s.exposure_mean)} ({_num(s.exposure_median)})" if bad else "-",
            _times(_exposure_ratio(s, oracle)), _times(_exposure_ratio(s, floor)),
            f"{_num(s.promote_minutes_median)} ({_one(s.promote_minutes_mean)})"))
    return rows


def table(summaries: Sequence[Summary]) -> str:
    """The results as a markdown table."""
    return markdown_table(TABLE_COLUMNS, table_rows(summaries))


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
        if s.judge != "policy-oracle" or not _bad(s.scenario):
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
            f"({acceptable_limits(policy_named('benchmark'))}) is what separates the two "
            "oracles.", ""]


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


def _setup(policy_name: str = "benchmark") -> str:
    policy = policy_named(policy_name)
    schedule = Schedule.of(policy)
    alpha = policy.spec.analysis.alpha
    checks = ", ".join(f"{c.name} ({c.kind})" for c in policy.spec.analysis.checks)
    return (
        "Setup. Steps " + "/".join(map(str, schedule.weights)) + f"% with at least "
        f"{schedule.min_seconds[0] / 60:g} one-minute intervals and {schedule.min_requests[0]} "
        f"canary requests per step; a step that has not passed after "
        f"{schedule.deadline_seconds / 60:g} "
        "minutes is inconclusive (the rollout would pause for a human). Every judge runs on "
        "the same schedule and the same random streams. Rollwise uses the policy's checks "
        f"[{checks}], alpha {alpha:g}; the step before 100% needs the non-inferiority "
        "certificate, earlier steps pass on absence of evidence of harm "
        "(`rollwise-strict`: the certificate at every step; "
        "`rollwise-lenient`: never, as Flagger and Kayenta; `rollwise-slo`: the default "
        "rule with the Flagger-style judge's SLOs as absolute guards, maxRate 1% and "
        "maxLatency 500ms, which can also certify the canary). " + describe())


def _columns() -> str:
    return (
        "`rolled back` is the false-rollback rate in the `aa` rows and the detection rate "
        "elsewhere. Exposure is the number of requests the bad canary served before it was "
        "rolled back, over the rollouts that rolled it back (so it flatters a judge that "
        "rolls back early and often: read it with the A/A row); `x oracle` divides by the "
        "oracle SPRT's mean exposure at the same rate. The oracle knows both the stable and "
        "the bad revision exactly; in the `aa` rows it tests the three regressions at "
        "alpha/3 each and promotes only once it has accepted all three. `policy-oracle` is "
        "the same SPRT with the worst canary the policy accepts as its null "
        f"({acceptable_limits(policy_named('benchmark'))}) instead of the stable revision: "
        "no valid judge of the policy can beat it, and `x policy-oracle` divides by its "
        "exposure.")


def markdown(summaries: Sequence[Summary], *, seed: int, rollouts: int, seconds: float,
             workers: int, command: str) -> str:
    alpha = policy_named("benchmark").spec.analysis.alpha
    parts = [
        "# Rollwise canary-analysis benchmark",
        "",
        f"Reproduce: `{command}` (seed {seed}, {rollouts} rollouts per scenario, rate and "
        f"judge; {seconds / 60:.1f} minutes on {workers} worker processes).",
        "",
        _setup(),
        "",
        _columns(),
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


Cell = tuple[str, int]


def _pyplot() -> Any:
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    return plt


def _bars(ax: Any, summaries: Sequence[Summary], cells: Sequence[Cell], labels: Sequence[str],
          value: Callable[[Summary], float],
          note: Callable[[Summary], str] | None = None, fontsize: int = 10,
          rotation: int = 0) -> None:
    """One group of bars per cell (scenario, rps), one bar per judge."""
    judges = [j for j in JUDGES if any(s.judge == j for s in summaries)]
    width = 0.8 / max(len(judges), 1)
    for k, j in enumerate(judges):
        xs = [i + k * width for i in range(len(cells))]
        found = [_find(summaries, c, r, j) for c, r in cells]
        ys = [value(s) if s else math.nan for s in found]
        ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width, label=j)
        for x, y, s in zip(xs, ys, found, strict=True):
            if note and s:
                ax.annotate(note(s), (x, 0 if math.isnan(y) else y), ha="center",
                            va="bottom", fontsize=6, rotation=90,
                            xytext=(0, 2), textcoords="offset points")
    ax.set_xticks([i + width * (len(judges) - 1) / 2 for i in range(len(cells))], labels,
                  fontsize=fontsize, rotation=rotation)
    ax.margins(y=0.15)


def plot(summaries: Sequence[Summary], path: Path, alpha: float) -> None:
    """Four panels: A/A false rollbacks, exposure on the error regression, detection of
    each regression, time to promote a good canary. Needs matplotlib."""
    plt = _pyplot()
    rps = sorted({s.rps for s in summaries})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))

    def bars(ax: Any, scenario: str, value: Callable[[Summary], float],
             note: Callable[[Summary], str] | None = None) -> None:
        _bars(ax, summaries, [(scenario, r) for r in rps], [f"{r} rps" for r in rps], value,
              note)

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
    _bars(ax, summaries, [(s, r) for s in bad for r in rps],
          [f"{s}\n{r}" for s in bad for r in rps], lambda s: 100 * s.rolled_back, fontsize=7)
    ax.set_title("bad canaries rolled back (%)")
    ax = axes[1][1]
    bars(ax, "aa", lambda s: s.promote_minutes_median, lambda s: f"{100 * s.promoted:.0f}%")
    ax.set_title("A/A: minutes to promotion (median; label: % promoted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the realistic suite -------------------------------------------------------------


@dataclass(frozen=True)
class IssueFigure:
    """A figure of issue 15 (its table and text), to be shown next to the measured one."""

    condition: str
    cases: tuple[str, ...]
    rps: tuple[int, ...]
    claim: str
    judges: tuple[str, ...] = ("rollwise", "rollwise-slo")
    quantity: str = "rolled back"      # or "promoted", "x oracle"


ISSUE_15 = (
    IssueFigure("independent per-minute error-rate variation, CV 0.3", ("aa-cv0.3",), (1000,),
                "6.2-6.7%"),
    IssueFigure("the same, CV 1.0", ("aa-cv1",), (100, 1000), "26-35% / 67-73%"),
    IssueFigure("shared per-minute variation, CV 1.0", ("aa-shared-cv1",), (1000,),
                "6.1%: the relative test holds, the absolute guard does not"),
    IssueFigure("latency level jitter, log-sd 0.1, independent", ("aa-jitter0.1",),
                (100, 1000), "10-11% / 46-50%"),
    IssueFigure("cold start, x2 latency for 60-120 s", ("aa-cold60", "aa-cold120"),
                (100, 1000), "100%"),
    IssueFigure("the same at 10 rps", ("aa-cold60", "aa-cold120"), (10,), "78-82%"),
    IssueFigure("Flagger-style, overdispersed rows", ("aa-cv0.3", "aa-cv1", "aa-shared-cv1",
                                                      "aa-jitter0.1"), (100, 1000), "1-20%",
                ("flagger",)),
    IssueFigure("Flagger-style, cold start", ("aa-cold60", "aa-cold120"), (100, 1000), "0-4%",
                ("flagger",)),
    IssueFigure("heavy tails (lognormal sigma 1.5, Pareto 1.5)",
                ("aa-lognormal1.5", "aa-pareto1.5"), (10,), "0.1-0.3%"),
    IssueFigure("diurnal load; 12 checks in one policy", ("aa-diurnal", "aa-12checks"),
                (10, 100, 1000), "0 of 2,000"),
    IssueFigure("slow leak 0.5% -> 1.5%: promoted", ("leak-slow", "leak"), (100,),
                "default rule rolls it back; rollwise-slo promotes 89%", quantity="promoted"),
    IssueFigure("gross regression (x10 errors): exposure over the oracle's", ("gross",),
                (10, 1000), "3x / 60x", ("rollwise", "rollwise-slo"), "x oracle"),
)


def _measured(summaries: Sequence[Summary], figure: IssueFigure) -> str:
    oracle = {(s.scenario, s.rps): s.exposure_mean for s in summaries if s.judge == "oracle"}
    parts = []
    for judge in figure.judges:
        values = []
        for case in figure.cases:
            for r in figure.rps:
                x = _find(summaries, case, r, judge)
                if x is None:
                    continue
                if figure.quantity == "promoted":
                    value = _pct(x.promoted)
                elif figure.quantity == "x oracle":
                    value = _times(_exposure_ratio(x, oracle))
                else:
                    value = (f"{_pct(x.rolled_back)} ({_pct(x.rolled_back_low)}-"
                             f"{_pct(x.rolled_back_high)})")
                values.append(f"{case}@{r} {value}")
        if values:
            parts.append(f"`{judge}`: " + ", ".join(values))
    return "; ".join(parts) or "not run"


def issue_comparison(summaries: Sequence[Summary]) -> list[str]:
    """Issue 15's figures next to the measured ones (cells that were run)."""
    lines = ["| issue 15: condition | rps | issue 15 | measured (95% CI) |",
             "|---|---:|---|---|"]
    for f in ISSUE_15:
        if any(_find(summaries, c, r, j) for c in f.cases for r in f.rps for j in f.judges):
            lines.append(f"| {f.condition} | {' / '.join(map(str, f.rps))} | {f.claim} | "
                         f"{_measured(summaries, f)} |")
    return lines


def runtimes(summaries: Sequence[Summary]) -> list[str]:
    """Milliseconds per simulated rollout for each cell, and what 2,000 rollouts of every
    judge in the cell would take on one worker."""
    judges = [j for j in JUDGES if any(s.judge == j for s in summaries)]
    lines = ["| scenario | rps | " + " | ".join(f"{j} ms" for j in judges)
             + " | 2,000 rollouts, all judges, 1 worker |",
             "|---|---:|" + "---:|" * (len(judges) + 1)]
    cells = list(dict.fromkeys((s.scenario, s.rps) for s in summaries))
    for case, r in cells:
        found = [_find(summaries, case, r, j) for j in judges]
        total = sum(x.ms_per_rollout for x in found if x and not math.isnan(x.ms_per_rollout))
        lines.append(f"| {case} | {r} | " + " | ".join(
            _num(x.ms_per_rollout) if x else "-" for x in found)
            + f" | {2000 * total / 60000:.1f} min |")
    return lines


def _conditions_text(names: Sequence[str]) -> list[str]:
    return [f"- `{n}`: {cases()[n].text()}" for n in names]


_ORACLES_UNDER_CONDITIONS = (
    "Under the conditions the oracles know the truth of every tick: a regression's time "
    "profile (the true rate at each tick for the leak and the mid-step onset), the cold "
    "start, and the canary's realised random effects and jitter in each shock period, "
    "applied to both hypotheses. Their likelihood is then the true one: they stay valid "
    "(false rollbacks <= alpha) on every A/A row, and their exposure is a lower bound that "
    "a judge, which cannot see the effects, need not reach where the effects are "
    "independent per revision; the policy-oracle takes no evidence from moments the bad "
    "canary is within the policy's limit. The oracles look once per tick, so at the "
    "default tick no judge can show less than one minute of exposure. For the mid-step "
    "regression, exposure counts the canary's requests from the onset (minute 8) on; a "
    "rollback before it counts as rolled back with no exposure.")


def realistic_markdown(summaries: Sequence[Summary], *, suite: str, seed: int, rollouts: int,
                       seconds: float, workers: int, tick: float, interval: float | None,
                       command: str, plot_name: str) -> str:
    """The report of the realistic (or the whole) suite."""
    names = list(dict.fromkeys(s.scenario for s in summaries))
    midstep = [s for s in summaries if s.before_onset > 0]
    looks = ("the policy's interval (1 minute)" if interval is None
             else f"every {interval:g} s")
    parts = [
        f"# Rollwise canary-analysis benchmark: the {suite} suite",
        "",
        f"Reproduce: `{command}` (seed {seed}, {rollouts} rollouts per case, rate and judge; "
        f"{seconds / 60:.1f} minutes on {workers} worker process"
        f"{'es' if workers > 1 else ''}).",
        "",
        _setup(),
        "",
        f"Traffic is simulated in ticks of {tick:g} s; Flagger and Kayenta look every minute, "
        f"Rollwise at {looks}, the oracles every tick. The cases (issue 15):",
        "",
        *_conditions_text(names),
        "",
        "Random effects are drawn per shock period of 60 s and per revision from a stream "
        "keyed by the rollout and the period; the error-rate effect is gamma with mean 1 "
        "(Poisson counts with a gamma rate: the negative binomial), `shared` is the "
        "correlation of the two revisions' effects. The service's latency SLO (Flagger's "
        "p99 limit, `rollwise-slo`'s maxLatency) is 500 ms for the default latency and the "
        "same multiple of stable's p99 (x1.95) under heavy tails. The 12-check policy is "
        "judged by `rollwise` as it is and by `rollwise-slo` with the SLO guards added to "
        "its unguarded error-rate and p99 checks.",
        "",
        _columns() + " " + _ORACLES_UNDER_CONDITIONS,
        "",
        table(summaries),
        "",
    ]
    if midstep:
        parts += ["Rolled back before the regression began (mid-step): " + ", ".join(
            f"{s.judge}@{s.rps} {_pct(s.before_onset)}" for s in midstep) + ".", ""]
    parts += [
        "## Against issue 15",
        "",
        *issue_comparison(summaries),
        "",
        "## Runtime per cell",
        "",
        "Milliseconds of one core per simulated rollout (mean over the cell's rollouts, on a "
        "machine shared with other work), and the minutes 2,000 rollouts of every judge in "
        "the cell would take on one worker.",
        "",
        *runtimes(summaries),
        "",
        f"![benchmark]({plot_name})",
        "",
    ]
    return "\n".join(parts)


def realistic_plot(summaries: Sequence[Summary], path: Path, alpha: float) -> None:
    """Three panels: false rollbacks on every A/A case, detection and exposure over the
    oracle's on every regression. Needs matplotlib."""
    plt = _pyplot()
    cells = list(dict.fromkeys((s.scenario, s.rps) for s in summaries))
    good = [c for c in cells if not _bad(c[0])]
    bad = [c for c in cells if _bad(c[0])]
    fig, axes = plt.subplots(3, 1, figsize=(max(12, 0.5 * len(good)), 13))
    oracle = {(s.scenario, s.rps): s.exposure_mean for s in summaries if s.judge == "oracle"}
    ax = axes[0]
    _bars(ax, summaries, good, [f"{c} @{r}" for c, r in good], lambda s: 100 * s.rolled_back,
          fontsize=7, rotation=90)
    ax.axhline(100 * alpha, color="black", linestyle="--", linewidth=1, label=f"alpha {alpha:g}")
    ax.set_title("A/A: false rollbacks (%)")
    ax.legend(fontsize=7, ncol=4)
    ax = axes[1]
    _bars(ax, summaries, bad, [f"{c}\n{r}" for c, r in bad], lambda s: 100 * s.rolled_back,
          fontsize=7)
    ax.set_title("regressions: rolled back (%)")
    ax = axes[2]
    _bars(ax, summaries, bad, [f"{c}\n{r}" for c, r in bad],
          lambda s: _exposure_ratio(s, oracle), lambda s: f"{100 * s.rolled_back:.0f}%",
          fontsize=7)
    if any(_exposure_ratio(s, oracle) > 0 for s in summaries if _bad(s.scenario)):
        ax.set_yscale("log")
    ax.set_title("regressions: exposure over the oracle's (label: % rolled back)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- rollwise simulate --policy -------------------------------------------------------


def policy_plot(summary: PolicyReport, path: Path) -> None:
    """Three panels for one user policy: the share of good canaries promoted by each
    minute (per request rate), the share of each regression rolled back (with the false
    rollbacks of the good canary and alpha for scale; Wilson 95% intervals), and the
    median exposure of each regression. Needs matplotlib."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    rates = sorted({g.rps for g in summary.good} | {b.rps for b in summary.bad})
    ax = axes[0]
    end = 1.1 * max([summary.fastest_minutes, *(m for g in summary.good for m in g.minutes)])
    for g in summary.good:
        minutes = sorted(g.minutes)
        shares = [100 * (i + 1) / g.rollouts for i in range(len(minutes))]
        ax.step([0.0, *minutes, end], [0.0, *shares, shares[-1] if shares else 0.0],
                where="post", label=f"{g.rps} rps ({100 * g.promoted:.0f}% promoted)")
    ax.axvline(summary.fastest_minutes, color="grey", linestyle=":", linewidth=1,
               label=f"fastest possible, {summary.fastest_minutes:g} min")
    ax.set_xlabel("minutes since the rollout began")
    ax.set_xlim(0, end)
    ax.set_ylim(0, 100)
    ax.set_title("good canary: promoted by then (%)")
    ax.legend(fontsize=7)
    names = list(dict.fromkeys(b.regression for b in summary.bad))
    groups = ["good canary:\nfalse rollbacks", *names]
    width = 0.8 / max(len(rates), 1)
    for k, r in enumerate(rates):
        cells = [(0, g.false_rollback_rate, g.false_rollback_interval)
                 for g in summary.good if g.rps == r]
        cells += [(1 + names.index(b.regression), b.detection, b.detection_interval)
                  for b in summary.bad if b.rps == r]
        axes[1].bar([i + k * width for i, _, _ in cells], [100 * x for _, x, _ in cells],
                    width, yerr=[[100 * (x - lo) for _, x, (lo, _) in cells],
                                 [100 * (hi - x) for _, x, (_, hi) in cells]],
                    capsize=2, label=f"{r} rps")
        exposed = [(names.index(b.regression), b.exposure_median) for b in summary.bad
                   if b.rps == r and not math.isnan(b.exposure_median)]
        axes[2].bar([i + k * width for i, _ in exposed], [e for _, e in exposed], width,
                    label=f"{r} rps")
    centre = width * (len(rates) - 1) / 2
    axes[1].axhline(100 * summary.alpha, color="black", linestyle="--", linewidth=1,
                    label=f"alpha {summary.alpha:g}")
    axes[1].set_xticks([i + centre for i in range(len(groups))], groups, fontsize=7)
    axes[1].set_ylim(0, 105)
    axes[1].set_title("rolled back (%, 95% CI)")
    axes[1].legend(fontsize=7)
    axes[2].set_xticks([i + centre for i in range(len(names))], names, fontsize=7)
    if any(b.exposure_median > 0 for b in summary.bad):
        axes[2].set_yscale("log")
    axes[2].set_title("bad canary's requests before rollback (median)")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"policy {summary.policy!r}: rollwise simulate --policy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
