"""Shared pieces of the command-line faces: errors and table printing."""

from __future__ import annotations

from typing import Any


class CLIError(Exception):
    """An error to show the user as one line, without a traceback."""


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


METRIC_COLUMNS = [
    "nmi",
    "ri",
    "ari",
    "ami",
    "acc",
    "precision_at_1",
    "precision_at_10",
    "map_at_r",
]
