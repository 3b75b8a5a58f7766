"""``python -m isr``: the ``isr`` command (see `isr.cli`)."""

import sys

from .cli import main

sys.exit(main())
