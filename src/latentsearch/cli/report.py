"""The ``report`` command: a self-contained HTML report of a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from latentsearch.cli.options import add_option, add_run, add_seed


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
    """A count of at least 1, refused by argparse before anything loads."""
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
    from latentsearch.report import build_report

    p = sub.add_parser(
        "report",
        help=COMMANDS["report"],
        description="Write a self-contained report of a trained run (index.html, its PNGs and "
        "report.json) that opens from disk in any browser, and print the path of index.html.",
    )
    add_run(p)
    p.add_argument(
        "--data",
        default=None,
        help="data source to report on (default: the run's own, from its config)",
    )
    p.add_argument(
        "--data-dir", default=None, help="folder holding a named source's files (default: run's)"
    )
    p.add_argument("--out", default=None, help="folder to write (default: RUN/report)")

    def count(*flags: str, field: str, help: str) -> None:
        add_option(p, *flags, owner=build_report, field=field, help=help, type=_positive)

    count("--max-points", field="max_points", help="most images on the 2-D map")
    count("--queries", field="n_queries", help="query rows of the retrieval grid")
    count("-k", "--k", field="k", help="neighbours per query in the grid")
    add_seed(p, owner=build_report, help="seeds the samples and the 2-D map")
    p.set_defaults(func=cmd_report)
