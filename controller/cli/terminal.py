"""Where the CLI's tables go: the terminal's width when stdout is one. I/O (reads stdout's
TTY state and ``$COLUMNS``); the layout itself is ``controller.cli.table`` (pure).

Callers: ``rollwise status`` and the simulated world's commands (``rollwise simulate``,
``rollwise sim scale``), so that every table the CLI prints is laid out the same way.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

from controller.cli.table import Column, layout


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def width() -> int:
    """The width to lay a table out for: ``$COLUMNS``, else the terminal's, else 80."""
    return shutil.get_terminal_size().columns


def for_terminal(columns: Sequence[Column], rows: Sequence[Sequence[str]],
                 otherwise: str) -> str:
    """The table laid out for the terminal when stdout is one, else ``otherwise`` (the
    caller's parseable form: markdown, tab-separated ...)."""
    return layout(columns, rows, width()).text() if stdout_is_terminal() else otherwise
