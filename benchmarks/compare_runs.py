"""Are two run directories the same result? Every prediction file byte for byte, and scores.json,
alignment.json and the adapter tensors equal once the fields that record when, how long and where are
dropped. Used to show that a redesign keeps outputs identical (issue 18).

    python benchmarks/compare_runs.py RUN_A RUN_B      # exit 0 when identical, 1 with the differences
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Fields that describe the run rather than its result.
VOLATILE = {"created", "timings", "seconds", "environment", "wall_seconds", "train_seconds", "samples_per_s",
            "meteor_paraphrase_table"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if len(out) >= 20:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'B' if key not in a else 'A'}")
            else:
                _diff(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
    elif a != b:
        out.append(f"{where}: {str(a)[:80]} != {str(b)[:80]}")


def compare(run_a: Path, run_b: Path) -> list[str]:
    """The differences between two run directories' results (empty when identical)."""
    problems: list[str] = []
    preds_a = sorted(p.name for p in (run_a / "predictions").glob("*.json"))
    preds_b = sorted(p.name for p in (run_b / "predictions").glob("*.json"))
    if preds_a != preds_b:
        problems.append(f"prediction files differ: {preds_a} vs {preds_b}")
    for name in sorted(set(preds_a) & set(preds_b)):
        if (run_a / "predictions" / name).read_bytes() != (run_b / "predictions" / name).read_bytes():
            problems.append(f"predictions/{name}: captions differ")
    for name in ("scores.json", "alignment.json"):
        if (run_a / name).is_file() or (run_b / name).is_file():
            a = _strip(json.loads((run_a / name).read_text()))
            b = _strip(json.loads((run_b / name).read_text()))
            _diff(a, b, name, problems)
    tensors = [run / "adapter" / "adapter_model.safetensors" for run in (run_a, run_b)]
    if all(t.is_file() for t in tensors) and not same_tensors(*tensors):
        problems.append("adapter/adapter_model.safetensors: tensors differ")
    return problems


def same_tensors(a: Path, b: Path) -> bool:
    """Two safetensors files hold the same names and equal tensors (shape, dtype and values)."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    problems = compare(args.run_a, args.run_b)
    for line in problems:
        print(line)
    print("identical" if not problems else f"{len(problems)} differences (first 20 shown)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
