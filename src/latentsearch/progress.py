"""When to draw progress bars: only when asked and only on a terminal."""

from __future__ import annotations

import sys


def show_progress(requested: bool) -> bool:
    """Whether a progress bar should be drawn (asked for, and stderr is a terminal)."""
    return bool(requested) and sys.stderr.isatty()
