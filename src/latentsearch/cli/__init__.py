"""The ``latentsearch`` command line: thin faces over the library's public functions.

Each module of this package registers its sub-commands; only this package parses arguments
and prints.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from latentsearch.cli import core, export, index, report, search, serve, up
from latentsearch.cli.common import is_expected, user_message

EXIT_USAGE = 2
COMMAND_MODULES = [core, index, search, report, serve, up, export]


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` (argparse keeps them only in a private list)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: complete for the command ``argv`` names, or for every command.

    Registering a command's options imports what they list (models, presets, index types:
    torch and FAISS). Given ``argv``, only the module of the command it names registers them;
    the other commands get a one-line entry from their module's ``COMMANDS``, enough for
    ``latentsearch --help`` and for argparse's "invalid choice" message. So ``--help`` and a
    ``search`` import only what they use.
    """
    parser = argparse.ArgumentParser(
        prog="latentsearch",
        description="Learn image representations on your own images, then search by image.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    command = None if argv is None else _command_of(argv)
    for module in COMMAND_MODULES:
        if argv is None or command in module.COMMANDS:
            module.register(sub)
        else:
            for name, help_text in module.COMMANDS.items():
                sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latentsearch`` console script.

    Errors a user can fix (``LatentsearchError`` and the like, see ``is_expected``) print as
    one line, in the command's own flags, and exit with 2; any other exception is a bug and
    surfaces with its traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # Pillow's DecompressionBombWarning (by its message: Pillow is not imported yet) only
    # repeats what the pixel limits refuse in one line; images.quiet_decompression_bomb_warning.
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
        try:
            return int(args.func(args))
        except Exception as e:
            if not is_expected(e):
                raise
            message = user_message(e, _command_parser(parser, args.command))
            print(f"latentsearch {args.command}: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


def _one_line_warnings(command: str, fallback: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints the library's own warnings as one line, like
    errors (``latentsearch train: warning: ...``), and leaves others to ``fallback``."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not str(filename).startswith(_PACKAGE_DIR):
            fallback(message, category, filename, lineno, file, line)
            return
        print(f"latentsearch {command}: warning: {message}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
