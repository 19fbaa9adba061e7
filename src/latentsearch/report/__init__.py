"""Pictures and a self-contained HTML report of a trained run, and experiment tracking.

>>> from latentsearch.runs import load_run
>>> build_report(load_run("runs/digits"), "runs/digits/report")  # doctest: +SKIP
PosixPath('runs/digits/report/index.html')
"""

from __future__ import annotations

from latentsearch.report.build import build_report, published_scores
from latentsearch.report.figures import retrieval_grid
from latentsearch.report.tracking import (
    NullTracker,
    Tracker,
    TrackingError,
    WandbTracker,
    make_tracker,
)

__all__ = [
    "NullTracker",
    "Tracker",
    "TrackingError",
    "WandbTracker",
    "build_report",
    "make_tracker",
    "published_scores",
    "retrieval_grid",
]
