"""The ``rollwise`` click group (``main``) and its subcommands; see ``controller.cli``."""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from controller.cli.lineage import lineage
from controller.cli.policy import policy
from controller.cli.rollouts import ROLLOUT_COMMANDS
from controller.cli.run import run
from controller.cli.sink import prediction_sink

PLUGIN_GROUP = "rollwise.cli"


class _PluginGroup(click.Group):
    """A group whose extra commands come from installed entry points, loaded lazily."""

    def _plugins(self) -> dict[str, str]:
        return {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | self._plugins().keys())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        for ep in entry_points(group=PLUGIN_GROUP, name=cmd_name):
            try:
                loaded = ep.load()
            except Exception as err:  # a broken plugin must not break the whole CLI
                return _unavailable(cmd_name, f"{type(err).__name__}: {err}")
            if isinstance(loaded, click.Command):
                return loaded
        return None


def _unavailable(name: str, why: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"'rollwise {name}' is unavailable here: {why}")

    return click.Command(name, callback=fail, help=f"(unavailable: {why[:60]})")


@click.group(cls=_PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollwise")
def main() -> None:
    """Rollwise: progressive delivery for KServe InferenceServices."""


main.add_command(policy)
main.add_command(run)
main.add_command(lineage)
main.add_command(prediction_sink)
for _command in ROLLOUT_COMMANDS:
    main.add_command(_command)

__all__ = ["main"]
