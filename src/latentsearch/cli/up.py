"""``latentsearch up``: a folder of images to a search page in one command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from latentsearch.cli.options import add_seed
from latentsearch.cli.serve import add_serve_options, check_serve_options, cmd_serve


def _default_work(photos: str) -> Path:
    return Path("latentsearch-work") / (Path(photos).resolve().name or "images")


def cmd_up(args: argparse.Namespace) -> int:
    from latentsearch.data.files import printable
    from latentsearch.workflow import prepare

    if not args.no_serve:
        check_serve_options(args)  # a bad --port must not wait for the training to finish
    work = Path(args.work) if args.work else _default_work(args.photos)
    done = prepare(
        args.photos,
        work,
        labels=args.labels,
        epochs=args.epochs,
        seed=args.seed,
        report=not args.no_report,
        keep_model=args.keep_model,
        log=lambda line: print(line, flush=True),
    )
    if done.skipped:
        n = len(done.skipped)
        print(f"skipped {n} unreadable file{'s' if n != 1 else ''}:")
        for path, reason in done.skipped[:20]:
            print(f"  {printable(path)}: {reason}")
        if n > 20:
            print(f"  ... and {n - 20} more")
    print(f"run:    {done.run} ({done.recipe}{', trained now' if done.trained else ', reused'})")
    print(f"index:  {done.index} ({done.count:,} images, {done.embedded:,} embedded now)")
    print(f"report: {done.report or 'none (--no-report)'}")
    if args.no_serve:
        print(f"serve it with: latentsearch serve {done.index}")
        return 0
    args.index, args.run = str(done.index), str(done.run)
    return cmd_serve(args)


COMMANDS = {
    "up": "train on a folder of images, index it and serve the search page, in one command",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds the ``up`` command to the ``latentsearch`` sub-parsers."""
    from latentsearch.workflow import prepare

    p = sub.add_parser(
        "up",
        help=COMMANDS["up"],
        description="Choose a recipe from the images (train/<class>/ folders or --labels: "
        "supervised; otherwise the no-label auto recipe), train, index every readable image "
        "and serve the search page. "
        "A second call on the same images and settings reuses the run and the index (by "
        "content hash) and serves in seconds; an interrupted training resumes.",
    )
    p.add_argument(
        "photos", help="folder of images (any layout; train/<class>/ folders give labels)"
    )
    p.add_argument(
        "--work",
        default=None,
        help="folder for the run, index and report (default: ./latentsearch-work/<folder name>)",
    )
    labels = p.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels",
        dest="labels",
        action="store_const",
        const=True,
        default=None,
        help="train on the class folders as labels, whatever the layout (default: only a "
        "train/<class>/ layout gives labels; other folders are just folders)",
    )
    labels.add_argument(
        "--no-labels",
        dest="labels",
        action="store_const",
        const=False,
        help="ignore class folders, even train/<class>/: train without labels",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    add_seed(p, owner=prepare, help="training seed")
    p.add_argument(
        "--keep-model",
        action="store_true",
        help="when images were added or changed, keep the last run's model (same settings) and "
        "only update the index, instead of training anew",
    )
    p.add_argument("--no-report", action="store_true", help="do not write the run's report")
    p.add_argument("--no-serve", action="store_true", help="prepare everything, then stop")
    add_serve_options(p)
    p.set_defaults(func=cmd_up)
