"""SPICE (Anderson et al. 2016) where it can run; a one-line reason where it cannot.

pycocoevalcap's SPICE downloads Stanford CoreNLP 3.6.0 on first use (which hangs or fails
offline) and writes temp and cache files into its package folder. We never download: SPICE is
offered only if `spice-1.0.jar` and CoreNLP's `stanford-corenlp-3.6.0.jar` and `-models.jar` are
already in its `lib/` folder (pycocoevalcap's, or `$CAPTUNE_SPICE_DIR`), and it runs in a temp
directory with a timeout. The score is the mean of per-image SPICE F-scores (as pycocoevalcap).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from captune.metrics.java import JavaRuntime, find_java, resource

_CORENLP = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def spice_dir() -> Path | None:
    explicit = os.environ.get("CAPTUNE_SPICE_DIR")
    return Path(explicit) if explicit else resource("spice")


def spice_status(java: JavaRuntime | None = None) -> str | None:
    """None when SPICE can run, else 'SPICE unavailable: <why>'."""
    runtime = java or find_java()
    if not runtime.available:
        return f"SPICE unavailable: {runtime.source}"
    folder = spice_dir()
    if folder is None or not (folder / "spice-1.0.jar").is_file():
        return "SPICE unavailable: spice-1.0.jar not found (pycocoevalcap not installed or $CAPTUNE_SPICE_DIR wrong)"
    missing = [name for name in _CORENLP if not (folder / "lib" / name).is_file()]
    if missing:
        return (
            f"SPICE unavailable: Stanford CoreNLP 3.6.0 jars are not in {folder / 'lib'} "
            f"(missing {', '.join(missing)}); captune does not download them"
        )
    return None


def compute_spice(
    gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Sequence[str]],
    java: JavaRuntime | None = None, timeout: float = 3600.0,
) -> tuple[float, np.ndarray]:
    """(mean SPICE F, per-image F) in the order of `gts`; raises RuntimeError with the reason."""
    runtime = java or find_java()
    reason = spice_status(runtime)
    if reason:
        raise RuntimeError(reason)
    folder = spice_dir()
    assert folder is not None
    ids = list(gts)
    with tempfile.TemporaryDirectory(prefix="captune-spice-") as tmp:
        src, out = Path(tmp) / "input.json", Path(tmp) / "output.json"
        src.write_text(json.dumps([{"image_id": k, "test": res[i][0], "refs": list(gts[i])}
                                   for k, i in enumerate(ids)]), encoding="utf-8")
        cmd = [str(runtime.path), "-jar", "-Xmx8G", str(folder / "spice-1.0.jar"), str(src),
               "-out", str(out), "-subset", "-silent"]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"SPICE unavailable: timed out after {timeout:.0f} s") from None
        if proc.returncode != 0 or not out.is_file():
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            raise RuntimeError(f"SPICE unavailable: spice-1.0.jar failed (code {proc.returncode}: {tail[0]})")
        results = json.loads(out.read_text(encoding="utf-8"))
    by_index = {}
    for item in results:
        f = item.get("scores", {}).get("All", {}).get("f")
        try:
            by_index[int(item["image_id"])] = float(f)
        except (TypeError, ValueError):
            by_index[int(item["image_id"])] = math.nan
    scores = np.array([by_index.get(k, math.nan) for k in range(len(ids))])
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else math.nan, scores
