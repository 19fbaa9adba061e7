"""Options derived from the library: a flag's default and its "(default: X)" come from the field.

A config dataclass (``TrainConfig``, ``ClusterConfig``, ...) or a function's keyword parameter
(``build_report``'s ``max_points``) owns each default; the command line reads it from there, so
it is written once. Checking values is the library's job: its ``ConfigError`` names the field,
and ``cli.common.user_message`` turns that name into the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a line break in a help text starts a new line."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines: list[str] = []
        for part in text.splitlines():
            lines.extend(super()._split_lines(part, width))
        return lines


def library_default(owner: Any, name: str) -> Any:
    """The default of a dataclass field or of a function's keyword parameter.

    Args:
        owner: A dataclass (``TrainConfig``) or a function (``build_report``).
        name: The field or parameter.

    Raises:
        TypeError: When ``owner`` has no such field or parameter, or it has no default.
    """
    if isinstance(owner, type) and dataclasses.is_dataclass(owner):
        for f in dataclasses.fields(owner):
            if f.name != name:
                continue
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
        raise TypeError(f"{owner.__name__} has no field {name!r} with a default")
    parameter = inspect.signature(owner).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{owner.__name__} has no keyword parameter {name!r} with a default")
    return parameter.default


def shown(value: Any) -> str:
    """A default as ``--help`` shows it: ``1e-3`` as 0.001, a sequence as its items."""
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list | tuple):
        text = " ".join(map(str, value))
    else:
        text = str(value)
    return text.replace("%", "%%")  # argparse formats help with %


def add_option(
    parser: argparse.ArgumentParser,
    *flags: str,
    owner: Any,
    field: str,
    help: str,
    preset: bool = False,
    default_text: str | None = None,
    **kwargs: Any,
) -> argparse.Action:
    """Adds an option whose default, its type and its "(default: X)" come from the library.

    Args:
        parser: The command's parser.
        *flags: The option strings (``"--epochs"``).
        owner: The dataclass or function that owns the default.
        field: Its field or keyword parameter.
        help: What the option does, in one line; "(default: X)" is added.
        preset: Leave the value ``None`` when the flag is not given, so a preset or recipe can
            fill it first; the help still shows the library's default.
        default_text: Words for the default in the help, where its value says too little
            (``None`` as "every core").
        **kwargs: Passed on to ``add_argument``; without ``type``, an int or float default
            gives its type.
    """
    default = library_default(owner, field)
    if isinstance(default, tuple) and kwargs.get("nargs") in ("+", "*"):
        default = list(default)
    plain_value = "action" not in kwargs and "choices" not in kwargs
    if plain_value and isinstance(default, int | float) and not isinstance(default, bool):
        kwargs.setdefault("type", type(default))
    text = default_text if default_text is not None else shown(default)
    return parser.add_argument(
        *flags, default=None if preset else default, help=f"{help} (default: {text})", **kwargs
    )


def add_run(parser: argparse.ArgumentParser, help: str = "run folder (or checkpoint file)") -> None:
    """Adds the positional ``run`` argument."""
    parser.add_argument("run", help=help)


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--json``: print ``what`` as JSON rather than as text."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def add_seed(
    parser: argparse.ArgumentParser, *, owner: Any, help: str, field: str = "seed"
) -> None:
    """Adds ``--seed`` with the default of ``owner``'s ``field``."""
    add_option(parser, "--seed", owner=owner, field=field, help=help, type=int)


def add_threads(parser: argparse.ArgumentParser, help: str = "CPU threads for torch") -> None:
    """Adds ``--threads`` (default: every core this process may use)."""
    parser.add_argument("--threads", type=int, default=None, help=f"{help} (default: every core)")
