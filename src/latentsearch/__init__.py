"""latentsearch: learn, embed, index and search images by content.

The notebook entry point is :func:`open_index` (see :mod:`latentsearch.searcher`); it is
imported on first use, so that ``import latentsearch`` (and the command line) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Searcher", "open_index"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from latentsearch import searcher

        return getattr(searcher, name)
    raise AttributeError(f"module 'latentsearch' has no attribute {name!r}")
