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
