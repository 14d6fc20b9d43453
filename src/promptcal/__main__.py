"""``python -m promptcal``: the ``promptcal`` command line."""

import sys

from promptcal.commands.cli import main

sys.exit(main())
