"""``python -m promptcal``: the ``promptcal`` command line."""

import sys

from promptcal.cli import main

sys.exit(main())
