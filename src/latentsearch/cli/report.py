"""The ``report`` command: a self-contained HTML report of a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_report(args: argparse.Namespace) -> int:
    from latentsearch.data import load_data
    from latentsearch.report import build_report
    from latentsearch.runs import load_run

    run = load_run(args.run)
    data = None
    if args.data is not None or args.data_dir is not None:
        spec = args.data if args.data is not None else run.config.data
        data = load_data(
            spec,
            image_size=run.model.image_size,
            data_dir=args.data_dir if args.data_dir is not None else run.config.data_dir,
            progress=True,
        )
    out = Path(args.out) if args.out is not None else run.path / "report"
    index = build_report(
        run,
        out,
        data=data,
        max_points=args.max_points,
        n_queries=args.queries,
        k=args.k,
        seed=args.seed,
        progress=True,
    )
    print(index)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


COMMANDS = {
    "report": "write an HTML report of a run: metrics, curves, maps, retrieval examples",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds the ``report`` command to the ``latentsearch`` sub-parsers."""
    p = sub.add_parser(
        "report",
        help=COMMANDS["report"],
        description="Write a self-contained report of a trained run (index.html, its PNGs and "
        "report.json) that opens from disk in any browser, and print the path of index.html.",
    )
    p.add_argument("run", help="run folder (or checkpoint file)")
    p.add_argument(
        "--data",
        default=None,
        help="data source to report on (default: the run's own, from its config)",
    )
    p.add_argument(
        "--data-dir", default=None, help="folder holding a named source's files (default: run's)"
    )
    p.add_argument("--out", default=None, help="folder to write (default: RUN/report)")
    p.add_argument("--max-points", type=_positive, default=2000, help="most images on the 2-D map")
    p.add_argument("--queries", type=_positive, default=8, help="query rows of retrieval grid")
    p.add_argument("--k", type=_positive, default=8, help="neighbours per query in the grid")
    p.add_argument("--seed", type=int, default=0, help="seeds the samples and the 2-D map")
    p.set_defaults(func=cmd_report)
