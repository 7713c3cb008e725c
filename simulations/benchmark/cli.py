"""``rollwise simulate``: run the canary-analysis benchmark and write its results; with
``--policy FILE``, simulate the user's own policy on their traffic instead.

``--suite iid`` (the default) writes benchmark.md/.csv/.png as the benchmark always did;
``--suite realistic`` and ``--suite all`` write benchmark-<suite>.md/.csv/.png (with
``-tick<N>``/``-interval<N>`` when those differ from the defaults).

``--policy FILE`` (``usersim``) loads the policy with the controller's loader (a bad file
prints the loader's located problems and exits 2), takes the traffic from ``--traffic``
and the options marked [--policy], prints what the policy does with a good canary and
with each ``--regression``, and writes simulate-<policy>.json and .png under ``--out``.
It is an option of the same command, not a subcommand, because the brief's spelling
``rollwise simulate --policy FILE`` is what an SRE types, and a group would turn today's
``rollwise simulate --seed 1`` into a parse of subcommands; options that belong to one
mode only are refused in the other (exit 2), never silently ignored.

The only I/O is the files read and written and the terminal.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from controller.cli import terminal
from controller.cli.table import markdown
from controller.policy.loader import PolicyError, load_file
from controller.policy.yamldoc import parse
from simulations.benchmark import report, run, usersim
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


BENCHMARK_ROLLOUTS = 2000
BENCHMARK_OUT = Path("simulations/results")
# Options of one mode only (click's parameter names), refused in the other.
BENCHMARK_ONLY = {"suite": "--suite", "scenario_names": "--scenarios",
                  "judge_names": "--judges", "interval": "--interval"}
POLICY_ONLY = {"traffic": "--traffic", "error_rate": "--error-rate", "p50": "--p50",
               "p99": "--p99", "latency_family": "--latency-family", "cv": "--cv",
               "cv_shared": "--cv-shared", "jitter": "--jitter", "jitter_shared": "--jitter-shared",
               "cold_start": "--cold-start", "cold_factor": "--cold-factor",
               "cold_error_factor": "--cold-error-factor", "regressions": "--regression"}


@click.command("simulate")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Simulate YOUR policy file on YOUR traffic (the options marked [--policy]) "
                   "instead of running the benchmark: time to promote a good canary, false "
                   "rollbacks, detection and exposure of each --regression.")
@click.option("--traffic", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="[--policy] YAML: rps, errorRate, latency {p50, p99, family}, dispersion "
                   "{cv, shared}, jitter {sd, shared}, coldStart {duration, latencyFactor, "
                   "errorFactor}, regressions; options override it.")
@click.option("--error-rate", default=None,
              help="[--policy] Stable's error rate, 0.005 or 0.5% [default: 0.5%].")
@click.option("--p50", default=None, help="[--policy] Stable's median latency [default: 80ms].")
@click.option("--p99", default=None, help="[--policy] Stable's p99 latency [default: 256ms].")
@click.option("--latency-family", type=click.Choice(("lognormal", "pareto")), default=None,
              help="[--policy] The latency law through p50 and p99; pareto: a heavy tail "
                   "[default: lognormal].")
@click.option("--cv", type=float, default=None,
              help="[--policy] CV of each revision's per-minute error rate beyond chance "
                   "[default: 0.3, pod heterogeneity; 0: independent requests].")
@click.option("--cv-shared", type=float, default=None,
              help="[--policy] Correlation of the two revisions' error-rate effects, 0-1 "
                   "[default: 0].")
@click.option("--jitter", type=float, default=None,
              help="[--policy] Log-sd of each revision's per-minute latency level "
                   "[default: 0.1].")
@click.option("--jitter-shared", type=float, default=None,
              help="[--policy] Correlation of the two revisions' jitter, 0-1 [default: 0].")
@click.option("--cold-start", default=None,
              help="[--policy] How long new pods are slow after each step begins "
                   "[default: 60s; 0s: none].")
@click.option("--cold-factor", type=float, default=None,
              help="[--policy] Latency multiplier while cold [default: 2].")
@click.option("--cold-error-factor", type=float, default=None,
              help="[--policy] Error-rate multiplier while cold [default: 1].")
@click.option("--regression", "regressions", multiple=True,
              help="[--policy] A bad canary to test, repeatable: errors=x2, errors=+50%, "
                   "latency=x1.2 (every latency), p99=+20% (the tail only), drift=0.25 (PSI).")
@click.option("--seed", type=int, default=20240601, show_default=True,
              help="Random seed; the same seed gives the same results.")
@click.option("--rollouts", type=click.IntRange(min=1), default=None,
              help=f"Rollouts per scenario, request rate and judge [default: "
                   f"{BENCHMARK_ROLLOUTS}; {usersim.DEFAULT_ROLLOUTS} with --policy].")
@click.option("--suite", type=click.Choice(tuple(SUITES)), default="iid", show_default=True,
              help="iid: every request an independent draw; realistic: issue 15's "
                   "production-like traffic and regressions; all: both.")
@click.option("--scenarios", "scenario_names", type=_names(tuple(cases())), default=None,
              help="Comma-separated scenarios (cases) of the suite [default: all of it].")
@click.option("--rps", "rates", type=_Rates(), default=None,
              help=f"Comma-separated request rates (requests per second) [default: "
                   f"{','.join(map(str, run.RPS))}; with --policy: the traffic file's].")
@click.option("--judges", "judge_names", type=_names(JUDGES), default=None,
              help=f"Comma-separated judges [default: all for iid, "
                   f"{','.join(REALISTIC_JUDGES)} otherwise].")
@click.option("--tick", type=float, default=None,
              help=f"Seconds of traffic per simulated tick (a divisor of 60); the oracles "
                   f"look every tick [default: {run.TICK_SECONDS:g}; with --policy the "
                   f"longest that divides the policy's interval; the controller looks every "
                   f"5 s].")
@click.option("--interval", type=float, default=None,
              help="The policy's analysis interval in seconds (a multiple of the tick): "
                   "the length of a block of evidence; Rollwise looks every tick, as the "
                   "controller looks every few seconds [default: the policy's, 60].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Directory for benchmark[-SUITE].md, .csv and .png [default: "
                   f"{BENCHMARK_OUT}]; with --policy for simulate-POLICY.json and .png "
                   f"[default: the current directory].")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes.")
@click.pass_context
def simulate(ctx: click.Context, /, policy_file: Path | None, seed: int, rollouts: int | None,
             rates: tuple[int, ...] | None, tick: float | None, out: Path | None,
             workers: int, **mode_options: Any) -> None:
    """Simulate whole canary rollouts and compare Flagger-, Kayenta-style, Rollwise and an
    oracle SPRT on identical random traffic: false rollbacks, misses, bad-canary
    exposure, time to promotion.

    With --policy FILE: what YOUR policy does with YOUR traffic (options marked
    [--policy]), judged by the controller's own analysis code."""
    wrong = BENCHMARK_ONLY if policy_file is not None else POLICY_ONLY
    given = [flag for name, flag in wrong.items()
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(f"{', '.join(given)}: "
                               + ("an option of the benchmark, not of --policy"
                                  if policy_file is not None else "an option of --policy FILE"))
    if policy_file is not None:
        simulate_policy(policy_file, seed=seed, rollouts=rollouts or usersim.DEFAULT_ROLLOUTS,
                        rates=rates, tick=tick, out=out or Path("."), workers=workers,
                        **{k: v for k, v in mode_options.items() if k in POLICY_ONLY})
        return
    benchmark(seed=seed, rollouts=rollouts or BENCHMARK_ROLLOUTS, rates=rates or run.RPS,
              tick=run.TICK_SECONDS if tick is None else tick, out=out or BENCHMARK_OUT,
              workers=workers, **{k: v for k, v in mode_options.items() if k in BENCHMARK_ONLY})


def benchmark(*, seed: int, rollouts: int, suite: str, scenario_names: tuple[str, ...] | None,
              rates: tuple[int, ...], judge_names: tuple[str, ...] | None, tick: float,
              interval: float | None, out: Path, workers: int) -> None:
    """``rollwise simulate`` without --policy: the benchmark, as it always ran."""
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


def _fail(lines: list[str]) -> NoReturn:
    """Print located problems on stderr and exit 2 (a usage error), no traceback."""
    for line in lines:
        click.echo(line, err=True)
    raise SystemExit(2)


def simulate_policy(policy_file: Path, *, seed: int, rollouts: int,
                    rates: tuple[int, ...] | None, tick: float | None, out: Path,
                    workers: int, traffic: Path | None, regressions: tuple[str, ...],
                    **options: str | float | None) -> None:
    """``rollwise simulate --policy FILE``: the user's policy on the user's traffic."""
    try:
        loaded = load_file(policy_file)
    except PolicyError as err:
        _fail([str(p) for p in err.problems])
    if len(loaded) != 1:
        _fail([f"{policy_file}: holds {len(loaded)} policies "
               f"({', '.join(p.name for p in loaded)}); give a file with one"])
    document = None
    if traffic is not None:
        try:
            docs = parse(traffic.read_text(encoding="utf-8"), str(traffic))
        except PolicyError as err:
            _fail([str(p) for p in err.problems])
        except (OSError, UnicodeDecodeError) as err:
            _fail([f"{traffic}: cannot read the traffic file: {err}"])
        if len(docs) != 1:
            _fail([f"{traffic}: a traffic file holds one YAML document, found {len(docs)}"])
        document = docs[0]
    flags = {f"--{name.replace('_', '-')}": value for name, value in options.items()}
    try:
        spec = usersim.traffic_spec(document, {**flags, "--rps": rates,
                                               "--regression": regressions or None})
        policy, notes = usersim.simulable(loaded[0].policy)
        tick = usersim.default_tick(policy) if tick is None else tick
    except usersim.TrafficError as err:
        _fail(err.problems)
    except ValueError as err:
        _fail([f"{policy_file}: {err}"])
    try:
        task_list = usersim.policy_tasks(spec, policy, rollouts, seed, tick)
    except ValueError as err:
        _fail([f"--tick: {err} (the policy's interval is "
               f"{policy.spec.analysis.interval.total_seconds():g} s)"])
    click.echo(f"simulating {rollouts} rollouts of each of "
               f"{1 + len(spec.regressions)} canaries at {len(spec.rps)} request rate(s) "
               f"on {workers} worker(s)", err=True)
    total = sum(t.stop - t.start for t in task_list)
    with click.progressbar(length=total, label="rollouts", show_eta=True, show_pos=True,
                           file=sys.stderr) as bar:
        results = run.run_all(usersim.run_policy_task, task_list, workers, bar.update)
    summary = usersim.summarise(results, spec, policy, tick)
    click.echo(usersim.render(summary, spec, notes, table=lambda columns, rows: (
        terminal.for_terminal(columns, rows, markdown(columns, rows)))))
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"simulate-{policy.name}"
    data = usersim.as_data(summary, spec, notes, seed=seed, rollouts=rollouts,
                           policy_file=str(policy_file))
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    try:
        report.policy_plot(summary, stem.with_suffix(".png"))
    except ImportError as err:
        raise click.ClickException(
            f"the plot needs matplotlib ({err}); install it and run again") from err
    click.echo(f"\nwrote {stem.with_suffix('.json')}, {stem.with_suffix('.png')}")


if __name__ == "__main__":  # pragma: no cover
    simulate()
