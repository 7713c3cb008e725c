"""``rollwise sim up`` and ``rollwise sim demo``: the simulated world for people.

Registered through the ``rollwise.cli`` entry point, so the controller never imports it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from pathlib import Path

import click

from controller.cli import terminal
from simulations.endpoints import FLAVOURS
from simulations.world import World, WorldConfig


@click.group()
def sim() -> None:
    """The simulated cluster: real kube-apiserver and Prometheus, simulated KServe."""


@sim.command()
@click.option("--kubeconfig", type=click.Path(path_type=Path), required=True,
              help="Where to write the admin kubeconfig.")
@click.option("--flavour", type=click.Choice(FLAVOURS), default="queue-proxy-legacy",
              help="Which generation of Knative queue-proxy metrics the endpoints expose.")
def up(kubeconfig: Path, flavour: str) -> None:
    """Start the whole world in the foreground until Ctrl-C."""
    started = time.monotonic()
    with World(WorldConfig(flavour=flavour)) as world:  # type: ignore[arg-type]
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(world.cluster.admin_kubeconfig, kubeconfig)
        click.echo(f"world up in {time.monotonic() - started:.1f}s")
        click.echo(f"kubeconfig (admin):       {kubeconfig}")
        click.echo(f"kubeconfig (controller):  {world.cluster.controller_kubeconfig}")
        click.echo(f"Prometheus:               {world.prometheus.url}")
        click.echo(f"namespaces for models:    {', '.join(world.config.namespaces)}")
        click.echo(f"try: kubectl --kubeconfig {kubeconfig} get inferenceservices -A")
        click.echo("Ctrl-C to stop")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        click.echo("stopping")


@sim.command()
@click.option("--seed", default=7, show_default=True)
def demo(seed: int) -> None:
    """Two rollouts end to end: a good model promoted, a bad one rolled back."""
    from simulations.demo.run import run_demo

    raise SystemExit(run_demo(seed))


@sim.command()
@click.option("--rollouts", "counts", default="1,10,25,50", show_default=True,
              help="Comma-separated numbers of rollouts analysed at once, in rising order.")
@click.option("--window", type=click.FloatRange(min=5), default=30.0, show_default=True,
              help="Seconds measured at each number.")
@click.option("--rps", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Requests per second to each InferenceService.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("simulations/results/scale.md"), show_default=True)
def scale(counts: str, window: float, rps: float, out: Path) -> None:
    """How Prometheus queries, API requests and the controller's time per analysis pass
    grow with the number of rollouts analysed at once."""
    import tempfile

    from simulations import scale as bench

    try:
        numbers = [int(c) for c in counts.split(",")]
    except ValueError:
        raise click.BadParameter(f"{counts!r} is not a list of integers",
                                 param_hint="--rollouts") from None
    if not numbers or numbers != sorted(set(numbers)) or numbers[0] < 1:
        raise click.BadParameter("give rising positive numbers, e.g. 1,10,30",
                                 param_hint="--rollouts")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rollwise-scale-") as workdir:
        rows = list(bench.measure(numbers, window=window, rps=rps, workdir=Path(workdir),
                                  progress=click.echo))
    text = bench.table(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Controller load against the number of rollouts\n\n"
        f"Reproduce: `rollwise sim scale --rollouts {counts} --window {window:g} --rps {rps:g}` "
        f"({(time.monotonic() - started) / 60:.1f} minutes, on this machine while nothing "
        "else ran). Each rollout's canary is held at 10% and analysed every 5 s (three "
        "checks: error rate, p99 latency, drift), against real Prometheus scraping the "
        "simulated endpoints every 5 s and the real kube-apiserver; everything, the "
        "world included, shares the machine's cores.\n\n" + text + "\n")
    click.echo(terminal.for_terminal(bench.TABLE_COLUMNS, bench.table_rows(rows),
                                     otherwise=text))
    click.echo(f"wrote {out}")
