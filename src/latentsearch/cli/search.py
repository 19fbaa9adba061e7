"""The ``search`` command: query images against an index, over :func:`latentsearch.open_index`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from latentsearch.cli.common import CLIError, print_table
from latentsearch.cli.options import add_json, add_option


def cmd_search(args: argparse.Namespace) -> int:
    from latentsearch.data.files import printable
    from latentsearch.searcher import BadBox, open_index, parse_box

    if args.k < 1:
        raise CLIError(f"-k must be at least 1, got {args.k}")
    try:
        box = None if args.box is None else parse_box(args.box)
    except BadBox as e:
        raise CLIError(f"--{e}") from None
    searcher = open_index(args.index, args.run)
    try:
        results = searcher.search_many(args.images, args.k, box=box)
    except BadBox as e:  # names the query: "query a.png: box ... reaches outside ..."
        raise CLIError(f"--box: {e}") from None
    grid = None
    if args.grid:
        from latentsearch.report.search_grid import search_grid

        if not any(results):
            raise CLIError("--grid: no neighbours to draw")
        out = Path(args.grid)
        if out.suffix.lower() != ".png":  # matplotlib would add ".png" itself: say so
            out = out.with_name(out.name + ".png")
        grid = search_grid(str(out), searcher.index, args.images, results)

    if args.json:
        payload = {
            "index": str(args.index),
            "run": str(searcher.run.path),
            "k": args.k,
            "box": None if box is None else list(box),
            "queries": [
                {"query": q, "neighbors": [asdict(n) for n in row]}
                for q, row in zip(args.images, results, strict=True)
            ],
            "grid": str(grid) if grid else None,
        }
        print(json.dumps(payload, indent=2))
        return 0
    for qi, (q, row) in enumerate(zip(args.images, results, strict=True)):
        if qi:
            print()
        print(f"query {printable(q)}" + ("" if box is None else f", box {','.join(map(str, box))}"))
        rows = [
            {
                "rank": n.rank,
                "distance": n.distance,
                "label": n.class_name if n.class_name is not None else n.label,
                "path": printable(n.path or n.id),  # a name that is not UTF-8 as \\xNN
            }
            for n in row
        ]
        # Without labels there are no classes to show (folder names are places, not classes).
        columns = ["rank", "distance", "label", "path"]
        print_table(rows, columns if searcher.index.labelled else columns[:2] + columns[3:])
    if grid:
        print(f"\ngrid written to {grid}")
    return 0


COMMANDS = {
    "search": "find the indexed images nearest to query images",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds the ``search`` command to the ``latentsearch`` sub-parsers."""
    from latentsearch.searcher import Searcher

    p = sub.add_parser(
        "search",
        help=COMMANDS["search"],
        description="Embed query images with the index's run and print their nearest "
        "indexed images (squared Euclidean distance between embeddings).",
    )
    p.add_argument("index", help="index folder from `latentsearch index`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--run", default=None, help="run folder (default: the one that built INDEX)")
    add_option(p, "-k", owner=Searcher.search_many, field="k", help="neighbours per query")
    p.add_argument(
        "--box",
        default=None,
        metavar="X,Y,W,H",
        help="search with only this part of each query: left, top, width and height in the "
        "image's own pixels",
    )
    add_json(p, "the results")
    p.add_argument(
        "--grid",
        default=None,
        metavar="PNG",
        help="also draw the results into this PNG file (.png is added when missing)",
    )
    p.set_defaults(func=cmd_search)
