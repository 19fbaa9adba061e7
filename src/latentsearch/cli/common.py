"""Shared pieces of the command-line faces: errors, their wording, and table printing."""

from __future__ import annotations

import argparse
import re
from typing import Any

from latentsearch.errors import ConfigError, LatentsearchError


class CLIError(Exception):
    """An error to show the user as one line, without a traceback."""


def is_expected(error: BaseException) -> bool:
    """Whether an exception is one a user caused and can fix, shown as one line.

    Those are :class:`LatentsearchError` (and :class:`CLIError`, and a file that is not
    there); any other exception, a plain ``ValueError`` included, is a bug and keeps its
    traceback.
    """
    return isinstance(error, LatentsearchError | CLIError | FileNotFoundError)


PARAMETER_ALIASES = {
    "run_path": "run",
    "index_path": "index",
    "variants": "models",
    "queue_size": "neighbour_queue",
    "n_clusters": "clusters",
    "n_neighbours": "neighbours",
    "finetune_self_label_epochs": "self_label_encoder_epochs",
    "n_queries": "queries",
}
"""Library parameters whose command-line option has another destination name."""

_NAMED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`]*))?`")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination (argparse lists them only privately)."""
    return {a.dest: a for a in parser._actions if a.option_strings}


def _flag(action: argparse.Action) -> str:
    """The option's long form (``--label-fraction``), else its only one."""
    return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])


def user_message(error: BaseException, parser: argparse.ArgumentParser) -> str:
    """An error's message in the command's terms: library parameters become its flags.

    A :class:`ConfigError`'s leading field (``label_fraction must be ...``) and any
    parameter named in backticks (```out```, ```resume=True```) become the option that sets
    it (``--label-fraction``, ``--out``, ``--resume``) when the command has one; the rest of
    the message is left as it is.

    Args:
        error: The exception.
        parser: The sub-command's parser.
    """
    options = _options(parser)
    text = str(error)

    def option(name: str) -> argparse.Action | None:
        return options.get(PARAMETER_ALIASES.get(name, name)) or options.get(name)

    def replace(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        action = option(name)
        if action is None:
            return match.group(0)
        if value is None or (action.nargs == 0 and value in ("True", "False")):
            return _flag(action)
        return f"{_flag(action)} {value}"

    if isinstance(error, ConfigError) and text.startswith(error.field):
        action = option(error.field)
        if action is not None:
            text = _flag(action) + text[len(error.field) :]
    return _NAMED.sub(replace, text)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Prints rows as an aligned text table (floats with 3 decimals)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def metric_columns() -> list[str]:
    """The columns of a metrics table: every score of ``latentsearch.metrics.METRICS``."""
    from latentsearch.metrics import METRICS  # imported when needed: it loads scikit-learn

    return list(METRICS)
