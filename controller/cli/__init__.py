"""The ``rollwise`` command line: one click group, subcommands in sibling modules.

I/O at the edges only: commands parse arguments, call the library, and print.
Commands that belong to the simulated world (``rollwise sim``, ``rollwise simulate``)
are found through the ``rollwise.cli`` entry-point group and imported only when
invoked, so the controller never imports ``simulations`` and an image built
without it still has a working CLI.

Importing the package is cheap: ``main`` (``app.py``) and the commands' imports (the
Kubernetes client, ML Metadata) load only when ``main`` is asked for, so the pure layout
(``controller.cli.table``) used by the simulated world's reports costs nothing more.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from controller.cli.app import main

        return main
    raise AttributeError(f"module 'controller.cli' has no attribute {name!r}")
