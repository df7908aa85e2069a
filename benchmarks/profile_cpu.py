"""Profile (cProfile): a short LoRA training run and a scored evaluation grid on the tiny model.

Lists the project's own functions (src/captune) by self time and by cumulative time, and groups the run's
time into categories: model compute (torch), collate + tokenisation, image decode, image preprocessing,
generation bookkeeping, metric loops, and the training loop's own per-step Python. cProfile slows Python
code more than torch kernels, so shares of Python-heavy categories are upper bounds.

    python benchmarks/profile_cpu.py                          # 1,000 training images, 200 eval images
    python benchmarks/profile_cpu.py --tiny                   # seconds: smoke test
    python benchmarks/profile_cpu.py --dump train.prof        # also save the raw profile (snakeviz, pstats)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PROJECT = "/captune/"
Key = tuple[str, int, str]

# category: (file fragment, function name or "" for every function of the file, use cumulative time)
CATEGORIES: dict[str, list[tuple[str, str, bool]]] = {
    "collate + caption tokenisation": [("captune/train/batches.py", "__call__", True)],
    "prompt tokenisation (captioner)": [("captune/generate/captioner.py", "_prompt_rows", True)],
    "caption decoding (batch_decode)": [("tokenization_utils", "batch_decode", True)],
    "image decode (open_image)": [("captune/data/images.py", "open_image", True)],
    "pixel preprocessing + decode": [("captune/model/features.py", "pixel_values", True)],
    "feature store get/put": [("captune/model/features.py", "get", True), ("captune/model/features.py", "put", True)],
    "HF generate (all)": [("transformers/generation/utils.py", "generate", True)],
    "metric scoring (Scorer.score)": [("captune/metrics/suite.py", "score", True)],
    "metrics: project Python (self)": [("captune/metrics/", "", False)],
    "training loop body (self)": [("captune/train/loop.py", "", False)],
    "checkpoint + adapter writes": [("captune/train/checkpoint.py", "save_checkpoint", True),
                                    ("captune/model/adapters.py", "save_adapter", True)],
}


def category_times(stats: pstats.Stats) -> dict[str, float]:
    raw: dict[Key, tuple] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for name, rules in CATEGORIES.items():
        total = 0.0
        for fragment, func, cumulative in rules:
            for (file, _line, fn), (_cc, _nc, tt, ct, _callers) in raw.items():
                if fragment in file and (not func or fn == func):
                    total += ct if cumulative else tt
        out[name] = total
    def self_time(match) -> float:
        return sum(v[2] for (file, _line, fn), v in raw.items() if match(file, fn))

    out["self: torch (C ops + nn.Module Python)"] = self_time(
        lambda file, fn: "/torch/" in file or (file == "~" and ("torch" in fn or "Tensor" in fn)))
    out["self: transformers Python"] = self_time(lambda file, fn: "/transformers/" in file)
    out["self: peft Python"] = self_time(lambda file, fn: "/peft/" in file)
    out["self: accelerate Python"] = self_time(lambda file, fn: "/accelerate/" in file)
    out["self: captune Python (all project code)"] = self_time(lambda file, fn: PROJECT in file)
    out["self: tokenizers / PIL / numpy / json"] = self_time(
        lambda file, fn: any(k in file or k in fn for k in ("tokenizers", "PIL", "numpy", "json")))
    return out


def project_rows(stats: pstats.Stats, sort: str, limit: int) -> list[tuple[str, int, float, float]]:
    raw: dict[Key, tuple] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in raw.items():
        if PROJECT in file and "/benchmarks/" not in file:
            short = file.split("/src/", 1)[-1]
            rows.append((f"{short}:{line} {fn}", nc, tt, ct))
    rows.sort(key=lambda r: r[2] if sort == "self" else r[3], reverse=True)
    return rows[:limit]


def report(title: str, profiler: cProfile.Profile, wall: float, limit: int) -> dict[str, Any]:
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"\n=== {title}: {wall:.2f} s wall, {total:.2f} s profiled ===")
    for sort in ("self", "cumulative"):
        print(f"top project functions by {sort} time:")
        print(f"  {'self s':>8} {'cum s':>8} {'calls':>8}  function")
        for name, calls, tt, ct in project_rows(stats, sort, limit):
            print(f"  {tt:>8.3f} {ct:>8.3f} {calls:>8}  {name}")
    cats = category_times(stats)
    print("categories (cumulative unless marked self; they overlap where one calls another):")
    for name, secs in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"  {secs:>8.3f} s {secs / total:>6.1%}  {name}")
    return {"wall_s": wall, "profiled_s": total, "categories_s": cats,
            "top_self": project_rows(stats, "self", limit), "top_cumulative": project_rows(stats, "cumulative", limit)}


SYSTEMS_TINY = """
eval:
  bootstrap_samples: 50
  human_baseline: false
  metrics: [rouge, diversity]
  systems:
    - {name: zero-shot-greedy}
    - {name: lora-greedy, adapter: true}
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-images", type=int, default=1000, help="synthetic training images (default 1000)")
    ap.add_argument("--eval-images", type=int, default=200, help="synthetic eval images (default 200)")
    ap.add_argument("--new-tokens", type=int, default=12, help="exact caption length in the grid (default 12)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap samples when scoring (default 200)")
    ap.add_argument("--top", type=int, default=15, help="functions listed per table (default 15)")
    ap.add_argument("--dump", help="save the raw profiles as DUMP.train / DUMP.grid (pstats format)")
    ap.add_argument("--tiny", action="store_true", help="a few images: a smoke test, not a measurement")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    common.set_threads(1)
    if args.tiny:
        args.train_images, args.eval_images, args.new_tokens, args.top = 32, 8, 3, 5
    info = common.print_machine()

    import accelerate  # noqa: F401  (imported before profiling: only the work is profiled)
    import peft  # noqa: F401

    import captune.metrics
    import captune.metrics.coco
    import captune.model.adapters  # noqa: F401
    from captune.config import load_config
    from captune.demo.synth import generate_synth
    from captune.grid.run import run_grid
    from captune.model.tiny import TinySpec, save_tiny
    from captune.train.loop import train

    results: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="profile_cpu_") as tmp:
        root = Path(tmp)
        generate_synth(root / "synth", size=24, grid=3,
                       split_sizes={"train": args.train_images, "val": 0, "test": args.eval_images})
        model_dir = save_tiny(root / "model", TinySpec(family="opt", image_size=24, patch_size=8))
        systems = SYSTEMS_TINY if args.tiny else f"eval:\n  bootstrap_samples: {args.bootstrap}\n"
        (root / "run.yaml").write_text(
            f"name: run\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {model_dir}\n"
            f"data:\n  path: {root / 'synth'}\n  eval_split: test\n"
            "train:\n  epochs: 1\n  captions_per_image: all\n  batch_size: 16\n  lr: 0.003\n  warmup_steps: 10\n"
            "  checkpoint_every: 50\n  tensorboard: false\n"
            f"generate:\n  batch_size: 32\n  max_new_tokens: {args.new_tokens}\n  min_new_tokens: {args.new_tokens}\n"
            + systems, encoding="utf-8")
        cfg = load_config(root / "run.yaml")
        for name, fn in (("train", lambda: train(cfg, progress=False)),
                         ("grid", lambda: run_grid(cfg, progress=False, score=True))):
            profiler = cProfile.Profile()
            start = time.perf_counter()
            profiler.enable()
            fn()
            profiler.disable()
            wall = time.perf_counter() - start
            if args.dump:
                profiler.dump_stats(f"{args.dump}.{name}")
            title = (f"training: {args.train_images} images x 5 captions, 1 epoch, batch 16" if name == "train"
                     else f"grid: {args.eval_images} images, default systems, scored")
            results[name] = report(title, profiler, wall, args.top)
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
