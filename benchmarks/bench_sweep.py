"""Benchmark: `captune sweep` over 4 LoRA placements vs the same 4 variants as separate `captune run` commands.

Side by side in one run, each arm a fresh `python -m captune` process (so model loading, dataset loading
and JVM start are counted as a user would pay them), same config, same warm feature cache:

  runs   for each placement: `captune run CONFIG --set lora.preset=P --set name=P` (train, full grid with the
         baselines, scores, report)
  sweep  `captune sweep CONFIG --grid lora.preset=P1,P2,P3,P4 --seeds 0` (trains the 4, baselines decoded once,
         one Scorer for all systems, ablation report)

Checked: every variant's adapter tensors are equal in both arms, and so are the scores (values and
intervals) of every system the two arms share.

    python benchmarks/bench_sweep.py                # the demo's benchmark and base (needs `captune demo` first)
    python benchmarks/bench_sweep.py --tiny         # seconds: tiny-opt on a tiny synthetic set
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from compare_runs import same_tensors

PLACEMENTS = ["qformer", "lm", "qformer+lm", "qformer+lm-wide"]
TINY = """name: base
output_dir: {root}/unused
model: {{name_or_path: {model}}}
data: {{path: {data}}}
train: {{max_steps: 5, batch_size: 8, lr: 0.003, tensorboard: false}}
generate: {{max_new_tokens: 8}}
eval:
  metrics: [coco, rouge, diversity]
  bootstrap_samples: 100
  human_baseline: false
  systems:
    - {{name: zero-shot-greedy}}
    - {{name: prompt-photo, prompt: "a photo of"}}
    - {{name: nucleus, do_sample: true, top_p: 0.9}}
    - {{name: lora-greedy, adapter: true}}
"""


def tiny_config(root: Path) -> Path:
    from captune.demo.synth import generate_synth
    from captune.model.tiny import TinySpec, save_tiny

    model = save_tiny(root / "opt", TinySpec(family="opt"))
    generate_synth(root / "synth", scale=0.005, size=32)
    path = root / "run.yaml"
    path.write_text(TINY.format(root=root, model=model, data=root / "synth"))
    return path


def demo_config(root: Path, scale: float) -> Path:
    """The config `captune demo --ablation` runs (the demo's cached benchmark, base and feature cache)."""
    from captune.sweep.demo import ablation_config

    root.mkdir(parents=True, exist_ok=True)
    return ablation_config(root, scale)[0]


def captune(args: list[str]) -> float:
    """Run `python -m captune ARGS` as a user would; seconds."""
    env = {**os.environ, "PYTHONPATH": str(common.REPO / "src"), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "captune", *args, "--no-progress"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def compare(root: Path, placements: list[str]) -> dict[str, Any]:
    """Adapters equal per variant; scores equal for every system both arms scored."""
    sweep = json.loads((root / "sweep" / "scores.json").read_text())
    out: dict[str, Any] = {"adapters_equal": {}, "scores_equal": {}}
    for p in placements:
        run, var = root / "runs" / p, root / "sweep" / "variants" / f"{p}-s0"
        out["adapters_equal"][p] = same_tensors(run / "adapter" / "adapter_model.safetensors",
                                                var / "adapter" / "adapter_model.safetensors")
        scores = json.loads((run / "scores.json").read_text())
        for system, entry in scores["systems"].items():
            name = system if system in sweep["systems"] else f"{p}-s0/{system}"
            out["scores_equal"][f"{p}:{system}"] = entry["metrics"] == sweep["systems"][name]["metrics"]
    out["identical"] = all(out["adapters_equal"].values()) and all(out["scores_equal"].values())
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny-opt and a tiny synthetic set (seconds)")
    parser.add_argument("--scale", type=float, default=1.0, help="the demo benchmark's scale (its base must be cached)")
    parser.add_argument("--placements", default=",".join(PLACEMENTS))
    parser.add_argument("--work", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    common.set_threads(1)
    placements = args.placements.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = args.work or Path(tmp)
        config = tiny_config(root) if args.tiny else demo_config(root / "config", args.scale)
        load_before = common.load_average()
        times: dict[str, Any] = {"runs": {}}
        for p in placements:
            times["runs"][p] = captune(["run", str(config), "--set", f"lora.preset={p}", "--set", "train.seed=0",
                                        "--set", f"name={p}", "--set", f"output_dir={root / 'runs'}"])
        times["runs_total"] = sum(times["runs"].values())
        times["sweep"] = captune(["sweep", str(config), "--grid", "lora.preset=" + ",".join(placements),
                                  "--seeds", "0", "--out", str(root / "sweep")])
        result = {"benchmark": "bench_sweep", "tiny": args.tiny, "placements": placements, "seconds": times,
                  "speedup": times["runs_total"] / times["sweep"], **compare(root, placements),
                  "load_average": [load_before, common.load_average()], "machine": common.machine_info()}
    print(f"{len(placements)} separate `captune run`: {times['runs_total']:.1f} s; `captune sweep`: "
          f"{times['sweep']:.1f} s; speed-up {result['speedup']:.2f}x; identical adapters and scores: "
          f"{result['identical']}; load average {load_before:.1f} -> {result['load_average'][1]:.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
