"""Run a sweep: train every variant (here in sequence, or as Ray Tune trials), then one evaluation.

The evaluation reuses the grid's own code: the config's base-model systems are captioned once into
`DIR/baselines/`, each variant's adapter systems into its own run directory (vision features from the
shared cache, so every image is encoded once), and one Scorer scores them all into `DIR/scores.json`,
with paired tests of every variant against the config's own variant and the best baseline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captune.env import launched_processes
from captune.errors import UserError
from captune.io import atomic_write_json
from captune.model.load import BaseModels
from captune.overlap import CaptionWorker
from captune.pipeline import train_stage
from captune.sweep.spec import SweepSpec, Variant, baseline_config

SCORES = "scores.json"


def train_local(spec: SweepSpec, progress: bool = True, dataset=None, say: Callable[[str], None] = print,
                caption_while_training: bool = False, bases: BaseModels | None = None) -> list[str]:
    """Every variant in this process, one after another (one dataset load, one feature cache, one loaded
    base model in `bases`). `caption_while_training`: caption each finished variant in a child process
    while the next trains."""
    trained: list[str] = []
    worker = CaptionWorker() if caption_while_training else None
    bases = bases if bases is not None else BaseModels()
    try:
        if worker is not None:
            worker.submit(baseline_config(spec), adapter=False)
        for i, v in enumerate(spec.variants, 1):
            say(f"[{i}/{len(spec.variants)}] {v.name}")
            if train_stage(v.cfg, dataset, progress, bases):
                trained.append(v.name)
            if worker is not None:
                worker.submit(v.cfg)
    finally:
        if worker is not None:
            worker.finish()
    return trained


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available() and (os.cpu_count() or 1) >= 2


def system_name(variant: str, system: str) -> str:
    return f"{variant}/{system}"


def caption_all(spec: SweepSpec, progress: bool = True, dataset=None, bases: BaseModels | None = None
                ) -> dict[str, float]:
    """The base-model systems once (DIR/baselines), each variant's adapter systems in its run directory,
    all on one loaded base model (`bases`: the one training used; each grid takes its adapter off again).
    Finished systems are read back, as in any grid."""
    from captune.grid.run import only_systems, run_grid

    grids = [(only_systems(baseline_config(spec), lambda s: not s.adapter), None, "baselines")]
    grids += [(only_systems(v.cfg, lambda s: s.adapter), v.run_dir / "adapter", f"variant/{v.name}")
              for v in spec.variants]
    bases = bases if bases is not None else BaseModels()
    timings: dict[str, float] = {}
    for cfg, adapter, label in grids:
        t = time.perf_counter()
        run_grid(cfg, adapter_dir=adapter, progress=progress, dataset=dataset, score=False, bases=bases)
        timings[label] = time.perf_counter() - t
    return timings


def score_all(spec: SweepSpec, dataset, progress: bool = False) -> dict[str, Any]:
    """One Scorer over every system of the sweep: DIR/scores.json (the grid's schema, plus `sweep`)."""
    from captune.grid.run import PRED_DIR, open_scorer, read_predictions, resolve_systems, sample_files
    from captune.metrics import build_report

    base = baseline_config(spec)
    systems = resolve_systems(base, True)
    baselines = [s for s in systems if not s.adapter]
    adapters = [s for s in systems if s.adapter]
    records = dataset.select(base.data.eval_split)
    first = read_predictions_any(base.run_dir / PRED_DIR / f"{baselines[0].name}.json") if baselines else None
    ids = set(first if first is not None else [r.image_id for r in records])
    refs = {r.image_id: list(r.refs) for r in records if r.image_id in ids}
    image_ids = list(refs)

    def read(path: Path) -> dict[int, str]:
        got = read_predictions(path, image_ids)
        if got is None:
            raise UserError(f"{path}: predictions missing or damaged; rerun the sweep")
        return got

    captions: dict[str, dict[int, str]] = {}
    for s in baselines:
        for f in sample_files(s):
            captions[f] = read(base.run_dir / PRED_DIR / f"{f}.json")
    for v in spec.variants:
        for s in adapters:
            for f in sample_files(s):
                captions[system_name(v.name, f)] = read(v.run_dir / PRED_DIR / f"{f}.json")
    with open_scorer(base, dataset, refs) as scorer:
        scorer.progress = progress
        results = scorer.score(captions)
        best = _best_baseline(baselines, results)
        own = spec.own_point
        own_by_seed = {v.seed: v.name for v in spec.variants if own is not None and v.point == own}
        comparisons = []
        for v in spec.variants:
            for s in adapters:
                a = system_name(v.name, s.name)
                ref = own_by_seed.get(v.seed)
                if ref is not None and ref != v.name:
                    b = system_name(ref, s.name)
                    comparisons.append((a, b, scorer.compare(results[a], results[b])))
                if best is not None:
                    comparisons.append((a, best, scorer.compare(results[a], results[best])))
        names = [s.name for s in baselines] + [system_name(v.name, s.name) for v in spec.variants for s in adapters]
        extra = {
            "reference_system": base.eval.reference_system if base.eval.reference_system in names else names[0],
            "systems_order": names,
            "system_settings": {**{s.name: {"adapter": False, "samples": s.samples, **s.decode.__dict__}
                                   for s in baselines},
                                **{system_name(v.name, s.name): {"adapter": True, "samples": s.samples,
                                                                 **s.decode.__dict__}
                                   for v in spec.variants for s in adapters}},
            "sweep": sweep_meta(spec, best, [s.name for s in adapters]),
        }
        report = build_report(scorer, {n: results[n] for n in names}, comparisons, extra=extra)
    atomic_write_json(spec.out / SCORES, report)
    return report


def read_predictions_any(path: Path) -> list[int] | None:
    """The image ids of a predictions file (the images the grid could read), or None."""
    import json

    try:
        return [int(r["image_id"]) for r in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _best_baseline(baselines, results) -> str | None:
    """The strongest base-model system by CIDEr (BLEU-4 without it): what every variant must beat."""
    best = None
    for s in baselines:
        values = results[s.name].values()
        score = values.get("coco/CIDEr") if values.get("coco/CIDEr") is not None else values.get("coco/BLEU-4")
        if score is not None and (best is None or score > best[0]):
            best = (score, s.name)
    return best[1] if best else None


def sweep_meta(spec: SweepSpec, best: str | None, adapter_systems: list[str]) -> dict[str, Any]:
    """What the ablation table needs besides scores: points, seeds, parameters and training time."""
    import json

    variants = {}
    for v in spec.variants:
        try:
            summary = json.loads((v.run_dir / "train" / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
        params = summary.get("parameters", {})
        variants[v.name] = {"group": v.group, "point": v.point, "seed": v.seed,
                            "trainable": params.get("trainable"), "total": params.get("total"),
                            "trainable_share": params.get("trainable_share"),
                            "train_seconds": summary.get("train_seconds"), "steps": summary.get("steps")}
    own = spec.own_point
    return {"grid": [[k, vals] for k, vals in spec.grid], "seeds": spec.seeds, "variants": variants,
            "own_group": next((v.group for v in spec.variants if own is not None and v.point == own), None),
            "best_baseline": best, "adapter_systems": adapter_systems}


def run_sweep(spec: SweepSpec, backend: str = "local", progress: bool = True, dataset=None,
              say: Callable[[str], None] = print, resources: dict[str, float] | None = None,
              caption_while_training: bool | None = None) -> dict[str, Any]:
    """Train (local or Ray), caption, score, report. Rerunning finishes what was interrupted.
    `caption_while_training` (local backend; default: on a CPU-only machine with >= 2 cores, one process):
    caption each finished variant in a child process while the next one trains.

    Under a multi-process launch (torchrun / `accelerate launch`, local backend) every process runs this:
    each variant trains data parallel, each grid is sharded (`captune.grid.shard`), and process 0 alone
    scores, writes the report and returns it; the others return {} once their captions are handed over."""
    from captune.data import load_dataset_from_config
    from captune.grid.shard import current_shard

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if backend == "ray":  # fails in one line before the dataset loads when ray is missing
        if launched_processes() > 1:
            raise UserError("--backend ray starts its own trials; run it in one process, not under torchrun / "
                            "accelerate launch (there, the local backend trains each variant data parallel)")
        from captune.sweep.ray_backend import require_ray, train_ray

        require_ray()
    shard = current_shard()
    if not shard.main:
        say, progress = (lambda _: None), False
    say(f"sweep: {len(spec.variants)} variants into {spec.out / 'variants'}")

    dataset = dataset if dataset is not None else load_dataset_from_config(spec.base.data)
    from captune.data.selection import plan_selection

    for v in spec.variants:  # a config that selects on evaluated images fails before any training
        plan_selection(v.cfg, dataset)
    t = time.perf_counter()
    bases = BaseModels()
    if backend == "ray":
        train_ray(spec, resources=resources, say=say)
    else:
        if caption_while_training is None:
            caption_while_training = (spec.base.model.device in ("cpu", "auto") and _cpu_only()
                                      and shard.world == 1)
        train_local(spec, progress=progress, dataset=dataset, say=say, caption_while_training=caption_while_training,
                    bases=bases)
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    say(f"captioning: {len(spec.variants)} adapters and the baselines ...")
    timings.update({f"caption/{k}": v for k, v in caption_all(spec, progress=progress, dataset=dataset,
                                                                         bases=bases).items()})
    del bases  # the base model's memory back before scoring
    timings["caption"] = time.perf_counter() - t
    if not shard.main:
        return {}
    t = time.perf_counter()
    report = score_all(spec, dataset, progress=progress)
    timings["score"] = time.perf_counter() - t
    from captune.sweep.table import write_report

    t = time.perf_counter()
    write_report(spec.out, report)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    atomic_write_json(spec.out / "sweep_timings.json", {k: round(v, 3) for k, v in timings.items()})
    return report


__all__ = ["Variant", "run_sweep", "score_all"]
