"""Soak: does a long training run leak memory? RSS sampled every N steps of a tiny-model LoRA run.

Usage: OMP_NUM_THREADS=1 python benchmarks/soak.py [--steps 2000] [--every 100] [--warmup 200]
       [--feature-cache memory|off] [--json OUT]

Trains a tiny BLIP-2 (OPT flavour, built in code) with LoRA through the real loop (`captune.train.loop.train`:
feature cache, checkpoints every 500 steps with pruning, JSONL log, TensorBoard when installed) on a
small colour dataset, and samples the process's resident set size after every `--every`-th optimizer
step. Growth is measured from the sample at `--warmup` steps (allocator pools, caches and lazy imports
have settled by then) to the last one; the target is < 5 %.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from PIL import Image

import captune.train.loop as loop_module
from captune.config import load_config

COLOURS = [(r, g, b) for r in (0, 128, 255) for g in (0, 255) for b in (0, 255)]  # 12 images
WORDS = ["red", "green", "blue", "dark", "bright", "pale", "sky", "sea", "grass", "fire", "snow", "night"]


def rss_bytes() -> int:
    """Resident set size of this process (psutil when installed, else /proc/self/statm)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")


def make_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, rgb in enumerate(COLOURS):
        name = f"img{i:02d}.png"
        Image.new("RGB", (32, 32), rgb).save(root / name)
        for k in range(2):
            rows.append({"file_name": name, "caption": f"a {WORDS[i]} {WORDS[(i + k + 3) % 12]} square",
                         "split": "train"})
    path = root / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def soak(steps: int, every: int, warmup: int, workdir: Path, feature_cache: str = "memory") -> dict:
    data = make_dataset(workdir / "data")
    cfg = load_config(None, [
        "model.name_or_path=tiny-opt", f"data.path={data}", f"output_dir={workdir / 'runs'}", "name=soak",
        "train.batch_size=4", "train.lr=1e-3", "train.warmup_steps=20", f"train.max_steps={steps}",
        "train.checkpoint_every=500", "train.keep_checkpoints=2", "train.prompt=",
        f"train.feature_cache={feature_cache}",
    ])
    samples: list[tuple[int, int, float]] = []
    start = time.perf_counter()
    original = loop_module.maybe_kill

    def sample_after_step(point: str, n: int) -> None:  # the loop's per-step fault hook, used as a probe
        if point == "after-step" and (n == 1 or n % every == 0):
            samples.append((n, rss_bytes(), time.perf_counter() - start))
        original(point, n)

    loop_module.maybe_kill = sample_after_step
    try:
        result = loop_module.train(cfg, progress=False)
    finally:
        loop_module.maybe_kill = original
    base = next((rss for step, rss, _ in samples if step >= warmup), samples[0][1])
    last = samples[-1][1]
    after = [rss for step, rss, _ in samples if step >= warmup]
    return {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "seconds": round(time.perf_counter() - start, 1),
        "samples": [{"step": s, "rss_mib": round(r / 2**20, 2), "t_s": round(t, 1)} for s, r, t in samples],
        "rss_at_warmup_mib": round(base / 2**20, 2),
        "rss_final_mib": round(last / 2**20, 2),
        "rss_max_after_warmup_mib": round(max(after) / 2**20, 2),
        "growth_pct": round(100.0 * (last - base) / base, 2),
        "max_growth_pct": round(100.0 * (max(after) - base) / base, 2),
        "warmup": warmup,
        "feature_cache": feature_cache,
        "every": every,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__}, threads {torch.get_num_threads()}",
        "date": datetime.date.today().isoformat(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--target-pct", type=float, default=5.0)
    parser.add_argument("--feature-cache", choices=["memory", "off"], default="memory",
                        help="off: decode every image and run the vision encoder every step.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="captune_soak_") as tmp:
        report = soak(args.steps, args.every, args.warmup, Path(tmp), args.feature_cache)
    print("| step | RSS (MiB) | elapsed (s) |\n|---|---|---|")
    for s in report["samples"]:
        print(f"| {s['step']} | {s['rss_mib']:.1f} | {s['t_s']:.0f} |")
    verdict = "PASS" if report["growth_pct"] < args.target_pct else "FAIL"
    print(f"\n{report['steps']} steps in {report['seconds']} s; RSS {report['rss_at_warmup_mib']} MiB at step "
          f"{args.warmup} -> {report['rss_final_mib']} MiB at the end: growth {report['growth_pct']:+.2f} % "
          f"(max {report['max_growth_pct']:+.2f} %), target < {args.target_pct} %: {verdict}")
    print(report["machine"])
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
