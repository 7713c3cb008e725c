"""``rollwise run``: the controller daemon (the container's entrypoint)."""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from controller.errors import KubeConfigError
from controller.settings import load_settings


@click.command()
def run() -> None:
    """Run the controller until SIGTERM. Configured by ROLLWISE_* variables (README)."""
    from controller import daemon

    try:
        settings = load_settings()
    except (ValidationError, ValueError) as err:
        raise click.ClickException(f"invalid settings: {err}") from err
    if not settings.policy_dir.is_dir():
        raise click.ClickException(f"policy directory {settings.policy_dir} does not exist "
                                   "(ROLLWISE_POLICY_DIR)")
    try:
        sys.exit(daemon.run(settings))
    except KubeConfigError as err:
        raise click.ClickException(str(err)) from err
