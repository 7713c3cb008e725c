"""The ``rollwise`` command line: one click group, subcommands in sibling modules.

I/O at the edges only: commands parse arguments, call the library, and print.
"""

from __future__ import annotations

import click

from controller.cli.policy import policy


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rollwise")
def main() -> None:
    """Rollwise: progressive delivery for KServe InferenceServices."""


main.add_command(policy)

__all__ = ["main"]
