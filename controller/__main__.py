"""``python -m controller`` is the ``rollwise`` command."""

from controller.cli import main

main()
