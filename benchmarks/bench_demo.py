"""`captune demo`'s first run (empty cache) for one or more source trees, side by side: wall time, peak
memory of the whole process tree (Python, its child, the JVMs; sampled every 0.2 s) and the demo's stage
timings, then whether the runs' outputs are identical (benchmarks/compare_runs.py).

    python benchmarks/bench_demo.py --tree old=/path/to/old/checkout --tree new=. [--rounds 2]

Each round runs every tree once, in turn, each from its own empty cache (targets: <= 120 s, <= 2 GB).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_runs import compare


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
        rss[int(entry.name)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run_demo(tree: Path, work: Path, extra: list[str]) -> dict:
    cache, out = work / "cache", work / "runs"
    env = {**os.environ, "CAPTUNE_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, "-m", "captune", "demo", "--no-progress", *extra]
    # both spellings of the output flag: older trees know only --out-dir
    help_text = subprocess.run([*cmd[:4], "--help"], env=env, capture_output=True, text=True).stdout
    cmd += ["--out" if "--out " in help_text or "--out\n" in help_text else "--out-dir", str(out)]
    t = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "stdout.txt", "w") as out_f, open(work / "stderr.txt", "w") as err_f:
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
    wall = time.perf_counter() - t
    if proc.returncode:
        last = (work / "stderr.txt").read_text().strip().splitlines()[-1:]
        raise SystemExit(f"{tree}: demo failed ({proc.returncode}): {last}")
    timings = json.loads((out / "demo" / "demo.json").read_text())["timings"]
    return {"wall_s": round(wall, 1), "peak_tree_gb": round(peak / 1e9, 2), "run": str(out / "demo"),
            "timings": {k: round(v, 1) for k, v in timings.items()
                        if k in ("base", "pipeline/train", "pipeline/eval", "report", "total")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source checkout")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args, extra = parser.parse_known_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    results: dict[str, list[dict]] = {name: [] for name in trees}
    print(f"load before: {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        for name, tree in trees.items():
            res = run_demo(Path(tree).resolve(), work / f"{name}-{r}", extra)
            res["load_after"] = round(os.getloadavg()[0], 2)
            results[name].append(res)
            print(f"round {r} {name}: {res['wall_s']} s, {res['peak_tree_gb']} GB, {res['timings']}, "
                  f"load {res['load_after']}")
    for name, runs in results.items():
        print(f"{name}: median wall {statistics.median(r['wall_s'] for r in runs):.1f} s, "
              f"median peak {statistics.median(r['peak_tree_gb'] for r in runs):.2f} GB")
    names = list(trees)
    for other in names[1:]:
        for r in range(args.rounds):
            diff = compare(Path(results[names[0]][r]["run"]), Path(results[other][r]["run"]))
            print(f"round {r}: {names[0]} vs {other}: " + ("identical" if not diff else f"{len(diff)} differences"))
            for line in diff[:5]:
                print("  " + line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
