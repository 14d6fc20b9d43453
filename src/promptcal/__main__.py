"""``python -m promptcal``: the ``promptcal`` command line."""

from promptcal.commands.cli import console

console()
