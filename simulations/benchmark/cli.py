"""``rollwise simulate``: run the canary-analysis benchmark and write its results.

``--suite iid`` (the default) writes benchmark.md/.csv/.png as the benchmark always did;
``--suite realistic`` and ``--suite all`` write benchmark-<suite>.md/.csv/.png (with
``-tick<N>``/``-interval<N>`` when those differ from the defaults). The only
I/O is the files under ``--out`` and the terminal.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from controller.cli import terminal
from simulations.benchmark import report, run
from simulations.benchmark.judges import JUDGES
from simulations.benchmark.scenarios import benchmark_policy
from simulations.benchmark.suites import SUITES, cases

# The judges the realistic suite compares by default: today's, without the two variants.
REALISTIC_JUDGES = ("flagger", "kayenta", "rollwise", "rollwise-slo", "policy-oracle", "oracle")


def output_stem(suite: str, tick: float, interval: float | None) -> str:
    """benchmark.md for the i.i.d. suite at the default timing; other suites and timings
    get their own files (benchmark-realistic-tick1.md), so runs do not overwrite each
    other."""
    parts = ["benchmark"] + ([] if suite == "iid" else [suite])
    parts += [] if tick == run.TICK_SECONDS else [f"tick{tick:g}"]
    parts += [] if interval is None else [f"interval{interval:g}"]
    return "-".join(parts)


def _names(allowed: tuple[str, ...]) -> click.ParamType[tuple[str, ...], object]:
    class Names(click.ParamType[tuple[str, ...], object]):
        name = "names"

        def convert(self, value: object, param: click.Parameter | None,
                    ctx: click.Context | None) -> tuple[str, ...]:
            if isinstance(value, tuple):
                return value
            names = tuple(v.strip() for v in str(value).split(",") if v.strip())
            unknown = [n for n in names if n not in allowed]
            if unknown or not names:
                self.fail(f"{', '.join(unknown) or 'nothing'} (choose from "
                          f"{', '.join(allowed)})", param, ctx)
            return names

    return Names()


class _Rates(click.ParamType[tuple[int, ...], object]):
    name = "rates"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            rates = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not rates or min(rates) <= 0:
            self.fail("rates must be positive", param, ctx)
        return rates


@click.command("simulate")
@click.option("--seed", type=int, default=20240601, show_default=True,
              help="Random seed; the same seed gives the same results.")
@click.option("--rollouts", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Rollouts per scenario, request rate and judge.")
@click.option("--suite", type=click.Choice(tuple(SUITES)), default="iid", show_default=True,
              help="iid: every request an independent draw; realistic: issue 15's "
                   "production-like traffic and regressions; all: both.")
@click.option("--scenarios", "scenario_names", type=_names(tuple(cases())), default=None,
              help="Comma-separated scenarios (cases) of the suite [default: all of it].")
@click.option("--rps", "rates", type=_Rates(), default=",".join(map(str, run.RPS)),
              show_default=True, help="Comma-separated request rates (requests per second).")
@click.option("--judges", "judge_names", type=_names(JUDGES), default=None,
              help=f"Comma-separated judges [default: all for iid, "
                   f"{','.join(REALISTIC_JUDGES)} otherwise].")
@click.option("--tick", type=float, default=run.TICK_SECONDS, show_default=True,
              help="Seconds of traffic per simulated tick (a divisor of 60); the oracles "
                   "look every tick.")
@click.option("--interval", type=float, default=None,
              help="How often Rollwise looks, in seconds (a multiple of the tick) "
                   "[default: the policy's analysis interval, 60].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("simulations/results"), show_default=True,
              help="Directory for benchmark[-SUITE].md, .csv and .png.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes.")
def simulate(seed: int, rollouts: int, suite: str, scenario_names: tuple[str, ...] | None,
             rates: tuple[int, ...], judge_names: tuple[str, ...] | None, tick: float,
             interval: float | None, out: Path, workers: int) -> None:
    """Simulate whole canary rollouts and compare Flagger-, Kayenta-style, Rollwise and an
    oracle SPRT on identical random traffic: false rollbacks, misses, bad-canary
    exposure, time to promotion."""
    names = scenario_names or SUITES[suite]
    outside = [n for n in names if n not in SUITES[suite]]
    if outside:
        raise click.BadParameter(f"{', '.join(outside)} not in the {suite} suite (choose from "
                                 f"{', '.join(SUITES[suite])})", param_hint="--scenarios")
    judge_names = judge_names or (JUDGES if suite == "iid" else REALISTIC_JUDGES)
    if any(cases()[s].bad for s in names):   # the exposure ratios need both oracles
        judge_names = (*judge_names,
                       *(o for o in ("policy-oracle", "oracle") if o not in judge_names))
    try:
        task_list = run.tasks(seed, rollouts, names, rates, judge_names, tick=tick,
                              interval=interval)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--tick/--interval") from err
    total = len(names) * len(rates) * len(judge_names) * rollouts
    start = time.monotonic()
    with click.progressbar(length=total, label="rollouts", show_eta=True,
                           show_pos=True) as bar:
        results = run.run(task_list, workers, bar.update)
    seconds = time.monotonic() - start
    summaries = run.summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(suite, tick, interval)
    timing = ("" if tick == run.TICK_SECONDS else f" --tick {tick:g}") + (
        "" if interval is None else f" --interval {interval:g}")
    command = (f"rollwise simulate --seed {seed} --rollouts {rollouts}"
               + ("" if suite == "iid" else f" --suite {suite}")
               + f" --scenarios {','.join(names)} --rps {','.join(map(str, rates))} "
               f"--judges {','.join(judge_names)}{timing} --workers {workers} "
               f"--out {shlex.quote(str(out))}")
    alpha = benchmark_policy().spec.analysis.alpha
    if suite == "iid":
        text = report.markdown(summaries, seed=seed, rollouts=rollouts, seconds=seconds,
                               workers=workers, command=command)
    else:
        text = report.realistic_markdown(summaries, suite=suite, seed=seed, rollouts=rollouts,
                                         seconds=seconds, workers=workers, tick=tick,
                                         interval=interval, command=command,
                                         plot_name=f"{stem}.png")
    (out / f"{stem}.md").write_text(text)
    report.write_csv(summaries, out / f"{stem}.csv")
    click.echo(terminal.for_terminal(report.TABLE_COLUMNS, report.table_rows(summaries),
                                     otherwise=report.table(summaries)))
    click.echo("")
    lines = (report.targets(summaries, alpha) if suite == "iid"
             else report.issue_comparison(summaries))
    for line in lines:
        click.echo(line)
    click.echo(f"\n{total} rollouts in {seconds / 60:.1f} min; wrote {out / f'{stem}.md'}, "
               f"{out / f'{stem}.csv'}")
    try:
        (report.plot if suite == "iid" else report.realistic_plot)(
            summaries, out / f"{stem}.png", alpha)
    except ImportError as err:
        raise click.ClickException(
            f"the plot needs matplotlib ({err}); install it and run again") from err
    click.echo(f"wrote {out / f'{stem}.png'}")


if __name__ == "__main__":  # pragma: no cover
    simulate()
