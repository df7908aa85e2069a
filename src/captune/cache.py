"""The one folder captune caches in: `$CAPTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/captune`, else
`~/.cache/captune`.

Everything cached lives below it (demo benchmark and base, vision features, METEOR tables, the human
baseline, WordNet), so one variable moves or clears all of it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CAPTUNE_CACHE_DIR"


def cache_root() -> Path:
    """The cache root, read from the environment on every call (tests and users may change it)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()
    return base / "captune"


def cache_path(*parts: str) -> Path:
    """A folder or file below the cache root, e.g. `cache_path("features")`."""
    return cache_root().joinpath(*parts)
