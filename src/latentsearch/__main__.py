"""``python -m latentsearch``: the command line, also as ``torchrun -m latentsearch``."""

from __future__ import annotations

import sys

from latentsearch.cli import main

if __name__ == "__main__":
    sys.exit(main())
