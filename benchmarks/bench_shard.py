"""Benchmark: the evaluation grid in 2 processes (torchrun, gloo) vs 1 process, side by side, tiny model.

A synthetic benchmark (`captune.demo.synth.generate_synth`, 24 px, grid 3) of `--images` eval images and a
tiny random BLIP-2 (OPT); 3 systems (greedy, beam 3, nucleus sampling with 2 draws), every caption exactly
`--new-tokens` long. Each round runs, as whole commands from a fresh run directory:

  one  `python -m captune eval CONFIG`
  two  `python -m torch.distributed.run --nproc_per_node 2 -m captune eval CONFIG`: each process captions
       every other batch, process 0 gathers the captions and scores once

Every prediction file of every run must equal the first one-process run byte for byte (checked). Reported,
median over the rounds: the command's wall time (process start, imports and model load included), process
0's grid time (`grid_timings.json` total: model load, captioning, gathering, scoring) and process 0's
captioning time (vision features, Q-Former, prefill, generate: the part that is shared out).

    python benchmarks/bench_shard.py                  # 1000 images, 2 rounds
    python benchmarks/bench_shard.py --tiny           # seconds: smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SYSTEMS = """
eval:
  metrics: [rouge, diversity]
  bootstrap_samples: 100
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: zero-shot-beam3, num_beams: 3}
    - {name: nucleus, do_sample: true, top_p: 0.9, temperature: 1.5, samples: 2}
"""


CAPTIONING = ("encode_images", "qformer", "prefill")  # with generate/*: process 0's captioning time


def write_config(path: Path, model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> Path:
    path.write_text(
        f"output_dir: {out}\nmodel:\n  name_or_path: {model_dir}\ndata:\n  path: {data}\n"
        f"generate:\n  batch_size: {args.batch}\n  max_new_tokens: {args.new_tokens}\n"
        f"  min_new_tokens: {args.new_tokens}\n" + SYSTEMS, encoding="utf-8")
    return path


def run_arm(arm: str, cfg: Path, name: str, port: int) -> float:
    """One whole `captune eval` command (1 process or torchrun with 2); its wall time."""
    launch = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"] if arm == "two" else []
    cmd = [sys.executable, *launch, "-m", "captune", "eval", str(cfg), "--no-progress", "--set", f"name={name}"]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{arm}: `{' '.join(cmd)}` failed:\n{res.stderr[-3000:]}")
    return wall


def predictions(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "predictions").glob("*.json"))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="eval images (default 1000)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of both arms, order alternating (default 2)")
    ap.add_argument("--batch", type=int, default=16, help="generation batch (default 16)")
    ap.add_argument("--new-tokens", type=int, default=16, help="exact caption length (default 16)")
    common.add_run_args(ap, "32 images, 1 round: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    common.set_threads(1)
    if args.tiny:
        args.images, args.rounds, args.batch, args.new_tokens = 32, 1, 8, 3
    info = common.print_machine()

    from captune.demo.synth import generate_synth
    from captune.model.tiny import TinySpec, save_tiny

    results: dict[str, Any] = {"machine": info, "images": args.images, "rounds": [], "identical": True}
    with tempfile.TemporaryDirectory(prefix="bench_shard_") as tmp:
        root = Path(tmp)
        generate_synth(root / "synth", size=24, grid=3, split_sizes={"train": 8, "val": 0, "test": args.images})
        model_dir = save_tiny(root / "model", TinySpec(family="opt", image_size=24, patch_size=8))
        cfg = write_config(root / "run.yaml", model_dir, root / "synth", root / "runs", args)
        results["load_before"] = common.wait_for_quiet(args.load, args.wait_tries)
        first = None
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            for arm in ("one", "two") if r % 2 == 0 else ("two", "one"):
                name = f"{arm}{r}"
                wall = run_arm(arm, cfg, name, 29560 + r)
                grid = json.loads((root / "runs" / name / "grid_timings.json").read_text())
                caption = sum(v for k, v in grid.items() if k in CAPTIONING or k.startswith("generate/"))
                row[arm] = {"wall_s": wall, "grid_s": grid["total"], "caption_s": caption, "timings": grid}
                preds = predictions(root / "runs" / name)
                first = first or preds
                if preds != first or len(preds) != 4:
                    results["identical"] = False
                print(f"round {r} {arm}: command {wall:6.1f} s, grid {grid['total']:6.1f} s (model load "
                      f"{grid.get('load_model', 0.0):.1f} s, captioning {caption:.1f} s, scoring "
                      f"{grid.get('score', 0.0):.1f} s), captions identical: {preds == first}", flush=True)
            results["rounds"].append(row)
    for arm in ("one", "two"):
        for key in ("wall_s", "grid_s", "caption_s"):
            results[f"{arm}_{key}"] = statistics.median(row[arm][key] for row in results["rounds"])
    results["speedup_wall"] = results["one_wall_s"] / results["two_wall_s"]
    results["speedup_grid"] = results["one_grid_s"] / results["two_grid_s"]
    results["speedup_caption"] = results["one_caption_s"] / results["two_caption_s"]
    results["load_after"] = common.load_average()
    print(f"{args.images} images: 1 process {results['one_wall_s']:.1f} s (grid {results['one_grid_s']:.1f} s), "
          f"2 processes {results['two_wall_s']:.1f} s (grid {results['two_grid_s']:.1f} s): "
          f"{results['speedup_wall']:.2f}x command, {results['speedup_grid']:.2f}x grid, "
          f"{results['speedup_caption']:.2f}x captioning (process 0); "
          f"identical captions: {results['identical']}; load {results['load_before']:.2f} -> "
          f"{results['load_after']:.2f}")
    if not results["identical"]:
        raise SystemExit("captions differ between the arms")
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
