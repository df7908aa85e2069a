"""GPU smoke test: every stage of `captune run` (and `caption`, `export`) runs where `--device` says.

One command for a machine with a GPU (about 1 minute for the smoke part on an H100, then the rest of
an 8-minute budget for `gpu_full_size.py`):

  1. `captune run` with `tiny-opt` and `tiny-t5` on a slice of the synthetic benchmark (train → grid
     → report), `model.device=cuda`; then `captune caption --adapter` and `captune export --merge` on
     the adapter it trained;
  2. fails unless every stage recorded a CUDA device (train/summary.json, the adapter's
     captune_adapter.json, each grid system in scores.json, caption's device line, export's
     captune_export.json) and the smoke part took at most `--smoke-limit` seconds (default 180);
  3. runs `benchmarks/gpu_full_size.py` in a fresh process with the rest of `--budget` (default 480 s).

    python benchmarks/gpu_smoke.py --out gpu_smoke.json      # on a GPU machine
    python benchmarks/gpu_smoke.py --dry-run                 # CPU, model.device=cpu, seconds: the code paths
"""

from __future__ import annotations

import argparse
import contextlib
import io
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

FAMILIES = ("tiny-opt", "tiny-t5")
SYSTEMS = """
eval:
  metrics: [rouge, diversity]
  bootstrap_samples: 100
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: zero-shot-beam3, num_beams: 3}
    - {name: lora-greedy, adapter: true}
    - {name: lora-beam3, adapter: true, num_beams: 3}
"""


def _cli(*args: str) -> tuple[int, str, str]:
    """`captune ARGS` in this process (one torch import for every stage), with its output captured."""
    from captune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def smoke_family(family: str, data: Path, root: Path, device: str, steps: int) -> dict[str, Any]:
    """`captune run`, `caption --adapter`, `export --merge` for one tiny model; the device each stage recorded."""
    cfg = root / f"{family}.yaml"
    cfg.write_text(f"name: {family}\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {family}\n"
                   f"  device: {device}\ndata:\n  path: {data}\ntrain:\n  max_steps: {steps}\n  batch_size: 8\n"
                   "  lr: 0.003\n  tensorboard: false\n  checkpoint_every: 1000\ngenerate:\n  max_new_tokens: 8\n"
                   + SYSTEMS)
    t = time.perf_counter()
    code, _, err = _cli("run", str(cfg), "--no-progress")
    out: dict[str, Any] = {"run_s": round(time.perf_counter() - t, 1)}
    if code != 0:
        return {**out, "error": f"captune run exited {code}: {err.strip()[-500:]}"}
    run = root / "runs" / family
    adapter = run / "adapter"
    out["devices"] = {
        "train": json.loads((run / "train" / "summary.json").read_text())["device"],
        "adapter record": json.loads((adapter / "captune_adapter.json").read_text())["trained_on"],
        **{f"grid: {k}": v for k, v in json.loads((run / "scores.json").read_text())["devices"].items()},
    }
    image = next(iter(sorted((data / "Flicker8k_Dataset").iterdir())))
    code, stdout, err = _cli("caption", str(image), "--adapter", str(adapter), "--device", device, "--json")
    line = next((ln for ln in err.splitlines() if ln.startswith("captioning on ")), "")
    out["devices"]["caption"] = line.removeprefix("captioning on ").split(" ")[0] if code == 0 else f"exit {code}"
    out["caption"] = json.loads(stdout)[0]["captions"][0] if code == 0 else err.strip()[-300:]
    code, _, err = _cli("export", "--adapter", str(adapter), "--out", str(root / f"{family}-merged"), "--merge",
                        "--device", device)
    out["devices"]["export"] = (json.loads((root / f"{family}-merged" / "captune_export.json").read_text())["device"]
                                if code == 0 else f"exit {code}: {err.strip()[-300:]}")
    out["seconds"] = round(time.perf_counter() - t, 1)
    return out


def wrong_devices(results: dict[str, Any], want: str) -> list[str]:
    """Every stage whose recorded device is not of type `want` ('cuda' / 'cpu'), as 'family/stage: device'."""
    bad = []
    for family, res in results.items():
        if "error" in res:
            bad.append(f"{family}: {res['error']}")
            continue
        bad += [f"{family}/{stage}: {dev}" for stage, dev in res["devices"].items()
                if str(dev).split(":")[0] != want]
    return bad


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="model.device for every stage (default cuda)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole command")
    ap.add_argument("--smoke-limit", type=float, default=180.0, help="seconds the smoke part may take")
    ap.add_argument("--images", type=int, default=64, help="training images of the synthetic slice")
    ap.add_argument("--steps", type=int, default=30, help="LoRA steps per tiny model")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, model.device=cpu, a smaller slice; gpu_full_size.py --tiny (checks the code paths)")
    ap.add_argument("--no-full-size", action="store_true", help="skip gpu_full_size.py")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.dry_run:
        args.device, args.images, args.steps = "cpu", 16, 2
    want = args.device.split(":")[0]
    os.environ.setdefault("CAPTUNE_NO_PROGRESS", "1")
    import torch

    from captune.demo.synth import generate_synth

    print(f"gpu smoke: model.device={args.device}; torch {torch.__version__}; "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}", flush=True)
    results: dict[str, Any] = {"machine": common.machine_info(), "args": vars(args), "families": {}}
    with tempfile.TemporaryDirectory(prefix="captune-gpu-smoke-") as tmp:
        root = Path(tmp)
        n = args.images
        generate_synth(root / "synth", size=32, split_sizes={"train": n, "val": max(2, n // 4), "test": max(2, n // 4)})
        for family in FAMILIES:
            res = smoke_family(family, root / "synth", root, args.device, args.steps)
            results["families"][family] = res
            print(f"{family}: {res.get('error') or res['devices']} ({res.get('seconds', res['run_s'])} s)", flush=True)
    smoke_s = time.perf_counter() - start
    results["smoke_s"] = round(smoke_s, 1)
    failures = wrong_devices(results["families"], want)
    if not args.dry_run and smoke_s > args.smoke_limit:
        failures.append(f"smoke part took {smoke_s:.0f} s > --smoke-limit {args.smoke_limit:.0f} s")
    results["failures"] = failures
    print(("FAIL: " + "; ".join(failures)) if failures else f"every stage ran on {want} ({smoke_s:.0f} s)", flush=True)

    if not args.no_full_size:
        rest = args.budget - (time.perf_counter() - start) - 15  # margin for the child's start and exit
        script = Path(__file__).resolve().parent / "gpu_full_size.py"
        full_out = Path(args.out).with_suffix(".full_size.json") if args.out else None
        cmd = [sys.executable, str(script), *(["--tiny"] if args.dry_run else ["--budget", str(max(rest - 30, 1))]),
               *(["--out", str(full_out)] if full_out else [])]
        if rest < 60 and not args.dry_run:
            results["full_size"] = {"skipped": f"{rest:.0f} s left of --budget {args.budget:.0f}"}
        else:
            t = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(common.REPO / "src"),
                                                                os.environ.get("PYTHONPATH", "")])}
            try:
                proc = subprocess.run(cmd, timeout=max(rest, 60), env=env, capture_output=True, text=True)
                results["full_size"] = {"exit": proc.returncode, "seconds": round(time.perf_counter() - t, 1),
                                        "tail": proc.stdout[-3000:] + proc.stderr[-2000:], "out": str(full_out)}
            except subprocess.TimeoutExpired:
                results["full_size"] = {"exit": "timeout", "seconds": round(time.perf_counter() - t, 1)}
            print(results["full_size"].get("tail", results["full_size"]), flush=True)
            if results["full_size"]["exit"] != 0:
                failures.append(f"gpu_full_size.py: exit {results['full_size']['exit']}")
    results["wall_s"] = round(time.perf_counter() - start, 1)
    common.write_json(args.out, results)
    if failures and argv is None:
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
