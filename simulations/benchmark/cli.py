"""``rollwise simulate``: run the canary-analysis benchmark and write its results."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from simulations.benchmark import run
from simulations.benchmark.judges import JUDGES
from simulations.benchmark.scenarios import benchmark_policy


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
@click.option("--scenarios", "scenario_names", type=_names(run.SCENARIOS),
              default=",".join(run.SCENARIOS), show_default=True,
              help="Comma-separated scenarios.")
@click.option("--rps", "rates", type=_Rates(), default=",".join(map(str, run.RPS)),
              show_default=True, help="Comma-separated request rates (requests per second).")
@click.option("--judges", "judge_names", type=_names(JUDGES), default=",".join(JUDGES),
              show_default=True, help="Comma-separated judges.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("simulations/results"), show_default=True,
              help="Directory for benchmark.md, benchmark.csv and benchmark.png.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes.")
def simulate(seed: int, rollouts: int, scenario_names: tuple[str, ...], rates: tuple[int, ...],
             judge_names: tuple[str, ...], out: Path, workers: int) -> None:
    """Simulate whole canary rollouts and compare Flagger-, Kayenta-style, Rollwise and an
    oracle SPRT on identical random traffic: false rollbacks, misses, bad-canary
    exposure, time to promotion."""
    if any(s != "aa" for s in scenario_names):   # the exposure ratios need both oracles
        judge_names = (*judge_names,
                       *(o for o in ("policy-oracle", "oracle") if o not in judge_names))
    task_list = run.tasks(seed, rollouts, scenario_names, rates, judge_names)
    total = len(scenario_names) * len(rates) * len(judge_names) * rollouts
    start = time.monotonic()
    with click.progressbar(length=total, label="rollouts", show_eta=True,
                           show_pos=True) as bar:
        results = run.run(task_list, workers, bar.update)
    seconds = time.monotonic() - start
    summaries = run.summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    command = (f"rollwise simulate --seed {seed} --rollouts {rollouts} "
               f"--scenarios {','.join(scenario_names)} --rps {','.join(map(str, rates))} "
               f"--judges {','.join(judge_names)} --workers {workers} "
               f"--out {shlex.quote(str(out))}")
    text = run.markdown(summaries, seed=seed, rollouts=rollouts, seconds=seconds,
                        workers=workers, command=command)
    (out / "benchmark.md").write_text(text)
    run.write_csv(summaries, out / "benchmark.csv")
    click.echo(run.table(summaries))
    click.echo("")
    alpha = benchmark_policy().spec.analysis.alpha
    for line in run.targets(summaries, alpha):
        click.echo(line)
    click.echo(f"\n{total} rollouts in {seconds / 60:.1f} min; wrote {out / 'benchmark.md'}, "
               f"{out / 'benchmark.csv'}")
    try:
        run.plot(summaries, out / "benchmark.png", alpha)
    except ImportError as err:
        raise click.ClickException(
            f"the plot needs matplotlib ({err}); install it and run again") from err
    click.echo(f"wrote {out / 'benchmark.png'}")


if __name__ == "__main__":  # pragma: no cover
    simulate()
