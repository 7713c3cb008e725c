"""``rollwise policy validate|schema``: check policy files like a compiler, print the schema.

I/O: reads the files and prints. Whatever the files hold, ``validate`` prints problems,
one line each, and exits 1; never a traceback (the loader reports even its own bugs as
problems).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from controller.policy import json_schema, load_files
from controller.policy.loader import Problem, policy_files
from controller.policy.yamldoc import printable


@click.group()
def policy() -> None:
    """Work with rollout policy files."""


@policy.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Validate policy FILES (or every *.yaml in a directory).

    Prints one line per problem as FILE:LINE:COLUMN: FIELD: MESSAGE and exits 1
    when any file is invalid (or cannot be read), 0 when all are valid.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        found, problem = _policy_files(path)
        files += found
        if problem is not None:
            problems.append(problem)
    policies, load_problems = load_files(files)
    problems += load_problems
    for problem in sorted(problems):
        click.echo(str(problem), err=True)
    bad_files = {p.file for p in problems}
    for loaded in policies:
        if loaded.file not in bad_files:
            click.echo(f"{printable(loaded.file)}: policy {loaded.name!r} is valid")
    if problems:
        click.echo(f"{len(problems)} problem(s) in {len(bad_files)} of {len(files)} file(s)",
                   err=True)
        sys.exit(1)


def _policy_files(path: Path) -> tuple[list[Path], Problem | None]:
    """The files ``path`` names (itself, or a directory's policy files), or the problem
    that keeps them from being listed."""
    try:
        if not path.is_dir():
            return [path], None
        found = policy_files(path)
    except OSError as err:
        return [], Problem(str(path), 1, 1, "",
                           f"cannot list policy files: {err.strerror or err}")
    if not found:
        return [], Problem(str(path), 1, 1, "", "no *.yaml or *.yml files here")
    return found, None


@policy.command()
def schema() -> None:
    """Print the JSON Schema of RolloutPolicy (for editors and yaml-language-server)."""
    click.echo(json.dumps(json_schema(), indent=2, sort_keys=False))
