"""`captune demo --ablation`: the recipe's placement question on the demo's benchmark.

Where do the adapters go: Q-Former only, LM only, both, or both with more projections? Each placement is
trained with 3 seeds on the demo's cached benchmark and seed-0 base (built by `captune demo` if missing),
then all adapters and the demo's baselines are scored in one grid (`captune sweep`'s code).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captune.errors import UserError

PLACEMENTS = ["qformer", "lm", "qformer+lm", "qformer+lm-wide"]
SEEDS = [0, 1, 2]
ABLATION_SYSTEMS = ["lora-greedy"]  # one adapter system keeps 12 trainings + grid inside ~4 minutes on 2 cores


def ablation_config(out: Path, scale: float = 1.0, cache_dir: str | Path | None = None):
    """demo.yaml on the demo's cached benchmark, seed-0 base and feature cache, with only the adapter systems
    in ABLATION_SYSTEMS and no human baseline, written as `out/config.yaml`."""
    from captune.config import dump_config
    from captune.demo.base import build_base, ensure_synth, feature_dir
    from captune.demo.pipeline import default_cache_dir, scaled_settings
    from captune.demo.recipe import demo_run_config
    from captune.grid.run import only_systems

    settings = scaled_settings(0, scale)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    data_dir = ensure_synth(settings, cache)
    base = build_base(settings, cache)
    cfg = demo_run_config(data_dir, base, out, name="config", feature_dir=feature_dir(cache),
                          overrides=["eval.human_baseline=false"])
    path = out / "config.yaml"
    dump_config(only_systems(cfg, lambda s: not s.adapter or s.name in ABLATION_SYSTEMS), path)
    return path, settings


def reuse_demo_baselines(demo_run: Path, baselines: Path, settings) -> list[str]:
    """Copy the base-model predictions `captune demo` already wrote when it ran with the same benchmark,
    base and decoding settings; the grid reads them back (after checking they cover the same images),
    so they are not decoded again."""
    import json

    from captune.config import load_config
    from captune.demo.recipe import DemoSettings

    try:
        theirs = DemoSettings(**json.loads((demo_run / "demo.json").read_text(encoding="utf-8"))["settings"])
        systems = load_config(demo_run / "config.yaml").eval.systems or []
        mine = {s.name: s for s in load_config(baselines.parent / "config.yaml").eval.systems or []}
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return []
    if theirs.key("synth", "base") != settings.key("synth", "base"):
        return []
    copied = []
    for system in systems:
        src = demo_run / "predictions" / f"{system.name}.json"
        dst = baselines / "predictions" / src.name
        same = system.name in mine and mine[system.name] == system
        if same and not system.adapter and src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(system.name)
    return copied


def run_ablation(out: str | Path = "runs", scale: float = 1.0, cache_dir: str | Path | None = None,
                 progress: bool = True, say: Callable[[str], None] = print,
                 placements: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    """Train placements x seeds into `out/ablation/variants/`, score them with the baselines, report."""
    from captune.demo.base import torch_threads
    from captune.sweep.local import run_sweep
    from captune.sweep.spec import baseline_config, expand

    root = Path(out) / "ablation"
    root.mkdir(parents=True, exist_ok=True)
    with torch_threads(1):
        config, settings = ablation_config(root, scale, cache_dir)
        grid = ["lora.preset=" + ",".join(placements or PLACEMENTS)]
        spec = expand(config, grid, seeds or SEEDS, root)
        copied = reuse_demo_baselines(Path(out) / "demo", baseline_config(spec).run_dir, settings)
        if copied:
            say(f"reusing captune demo's captions of {len(copied)} baseline systems")
        say(f"ablation: {len(spec.variants)} LoRA trainings ({', '.join(placements or PLACEMENTS)} x seeds "
            f"{', '.join(map(str, seeds or SEEDS))}) into {root / 'variants'}")
        return run_sweep(spec, progress=progress, say=say)
