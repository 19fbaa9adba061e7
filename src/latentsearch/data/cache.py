"""Where downloaded archives and decoded pixels are kept."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LATENTSEARCH_CACHE"
"""Environment variable that overrides the default cache folder."""


def default_cache_dir() -> Path:
    """``$LATENTSEARCH_CACHE`` when set, else ``~/.cache/latentsearch``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/latentsearch").expanduser()


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache folder to use: ``cache_dir`` when given, else ``default_cache_dir()``."""
    if cache_dir is None:
        return default_cache_dir()
    return Path(cache_dir).expanduser()
