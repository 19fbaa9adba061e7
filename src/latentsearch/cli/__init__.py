"""The ``latentsearch`` command line: thin faces over the library's public functions.

Each module of this package registers its sub-commands; only this package parses arguments
and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latentsearch.cli import core, index, report, serve
from latentsearch.cli.common import CLIError
from latentsearch.data import DataError

EXIT_USAGE = 2
COMMAND_MODULES = [core, index, report, serve]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="latentsearch",
        description="Learn image representations on your own images, then search by image.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latentsearch`` console script."""
    from latentsearch.training import RunError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DataError, RunError, CLIError, ValueError, FileNotFoundError) as e:
        print(f"latentsearch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
