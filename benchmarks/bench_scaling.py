"""Benchmark: training and evaluation cost vs number of images (linear scaling check), tiny model.

A synthetic benchmark (`captune.demo.synth.generate_synth`, 24 px, grid 3: one 8 px ViT patch per cell)
is generated once with the largest size; for each size N (default 1k, 2k, 4k, 8k) the first N images

  train  `captune.train.loop.train`: 1 epoch, one caption per image, batch 16 (feature caching included)
  eval   `captune.grid.run.run_grid(score=False)`: 3 systems (greedy, beam 3, LoRA greedy), every caption
         exactly `--new-tokens` long, on the same N images

and the time per image is reported at each size: constant per-image time = linear cost.

    python benchmarks/bench_scaling.py                      # 1000 2000 4000 8000
    python benchmarks/bench_scaling.py --tiny               # seconds: smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SYSTEMS = """
eval:
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: zero-shot-beam3, num_beams: 3}
    - {name: lora-greedy, adapter: true}
"""


def write_config(path: Path, model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> Path:
    path.write_text(
        f"name: run\noutput_dir: {out}\nmodel:\n  name_or_path: {model_dir}\ndata:\n  path: {data}\n"
        f"train:\n  epochs: 1\n  captions_per_image: one\n  batch_size: {args.batch}\n  lr: 0.003\n"
        "  warmup_steps: 10\n  checkpoint_every: 1000000\n  tensorboard: false\n"
        f"generate:\n  batch_size: {args.eval_batch}\n  max_new_tokens: {args.new_tokens}\n"
        f"  min_new_tokens: {args.new_tokens}\n" + SYSTEMS, encoding="utf-8")
    return path


def subset(dataset, n: int, split: str):
    """The first `n` training images, in `split` (the eval grid reads the `test` split)."""
    from captune.data.records import LoadedDataset

    records = [replace(r, split=split) for r in dataset.select("train")[:n]]
    return LoadedDataset(records=records, format=dataset.format, root=dataset.root)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(intercept, slope, R^2) of ys ~ intercept + slope * xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys) or 1.0
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return intercept, slope, 1 - ss_res / ss_tot


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    ap.add_argument("--batch", type=int, default=16, help="training batch (default 16)")
    ap.add_argument("--eval-batch", type=int, default=64, help="generation batch (default 64)")
    ap.add_argument("--new-tokens", type=int, default=8, help="exact caption length (default 8)")
    common.add_run_args(ap, "sizes 32 and 64: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    common.set_threads(1)
    if args.tiny:
        args.sizes, args.batch, args.eval_batch, args.new_tokens = [32, 64], 16, 32, 3
    info = common.print_machine()

    from captune.config import load_config
    from captune.data import load_dataset
    from captune.demo.synth import generate_synth
    from captune.grid.run import run_grid
    from captune.model.tiny import TinySpec, save_tiny
    from captune.train.loop import train

    results: dict[str, Any] = {"machine": info, "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        root = Path(tmp)
        largest = max(args.sizes)
        t = time.perf_counter()
        generate_synth(root / "synth", size=24, grid=3, split_sizes={"train": largest, "val": 0, "test": 0})
        print(f"synthetic data: {largest} images (24 px, grid 3) in {time.perf_counter() - t:.1f} s")
        spec = TinySpec(family="opt", image_size=24, patch_size=8)
        model_dir = save_tiny(root / "model", spec)
        full = load_dataset(root / "synth")
        load = common.wait_for_quiet(args.load, args.wait_tries)
        results["load_before"] = load
        print(f"{'images':>7} {'train':>9} {'steps':>6} {'ms/image':>9} {'ms/step':>8} {'eval':>9} {'ms/image':>9} "
              f"{'encode':>8} {'generate':>9}")
        for n in sorted(args.sizes):
            cfg_path = write_config(root / f"run{n}.yaml", model_dir, root / "synth", root / f"runs{n}", args)
            cfg = load_config(cfg_path)
            t = time.perf_counter()
            trained = train(cfg, progress=False, dataset=subset(full, n, "train"))
            train_s = time.perf_counter() - t
            eval_cfg = load_config(cfg_path, ["name=eval"])
            t = time.perf_counter()
            grid = run_grid(eval_cfg, adapter_dir=cfg.run_dir / "adapter", progress=False,
                            dataset=subset(full, n, "test"), score=False)
            eval_s = time.perf_counter() - t
            gen = sum(v for k, v in grid.timings.items() if k.startswith("generate/"))
            row = {"images": n, "train_s": train_s, "train_steps": trained.steps,
                   "train_loop_s": trained.summary.get("train_seconds"), "eval_s": eval_s,
                   "eval_timings": grid.timings, "train_ms_per_image": 1000 * train_s / n,
                   "eval_ms_per_image": 1000 * eval_s / n}
            results["rows"].append(row)
            print(f"{n:>7} {train_s:>8.2f}s {trained.steps:>6} {row['train_ms_per_image']:>9.2f} "
                  f"{1000 * (row['train_loop_s'] or train_s) / max(1, trained.steps):>8.1f} {eval_s:>8.2f}s "
                  f"{row['eval_ms_per_image']:>9.2f} {grid.timings.get('encode_images', 0):>7.2f}s {gen:>8.2f}s",
                  flush=True)
    rows = results["rows"]
    for key in ("train", "eval"):
        per = [r[f"{key}_ms_per_image"] for r in rows]
        fixed, slope, r2 = linear_fit([r["images"] for r in rows], [r[f"{key}_s"] for r in rows])
        results[f"{key}_fit"] = {"fixed_s": fixed, "ms_per_image": 1000 * slope, "r2": r2}
        print(f"{key}: time per image {min(per):.2f}-{max(per):.2f} ms; least squares: {fixed:.2f} s fixed + "
              f"{1000 * slope:.2f} ms/image (R^2 {r2:.4f})")
    print(f"load {load:.2f} -> {common.load_average():.2f}; peak RSS {common.peak_rss_mib():.0f} MiB")
    results["peak_rss_mib"] = common.peak_rss_mib()
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
