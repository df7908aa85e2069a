"""The house's rules, checked: imports run one way through the pipeline's layers, and no module is over
400 lines (README's architecture section)."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "captune"
LAYERS = {
    # foundations every layer may use
    "errors": 0, "cache": 0, "io": 0, "env": 0, "faults": 0, "progress": 0, "config": 0, "config_types": 0,
    "decoding": 0,
    "data": 1, "model": 2, "metrics": 2, "generate": 3, "report": 3, "train": 4, "grid": 4, "pipeline": 5,
    "overlap": 6, "sweep": 6, "demo": 6, "api": 7, "cli": 8, "__main__": 8,
}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # `captune` itself: the lazy facade


def test_imports_never_run_back_up_the_layers():
    upward = []
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        mine = _layer(module)
        assert mine is not None or module == "captune.__init__", f"{module}: not in LAYERS; place it"
        for target in re.findall(r"^\s*(?:from|import)\s+(captune(?:\.\w+)*)", path.read_text(), re.M):
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_no_module_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
