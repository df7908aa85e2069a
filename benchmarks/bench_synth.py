"""Throughput of `captune data synth`: median wall time of repeated full-size generations.

Usage: python benchmarks/bench_synth.py [--scale 1.0] [--repeats 3] [--workers 1 2] [--size 64]
Each repeat writes a fresh dataset into a temporary folder (files, token file, ground truth, rename),
so the number is what a user waits for, not just the rendering.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from captune.demo.synth import generate_synth


def bench(scale: float, repeats: int, workers: int, size: int, grid: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        for repeat in range(repeats):
            out = Path(tmp) / f"run{repeat}"
            start = time.perf_counter()
            generate_synth(out, scale=scale, seed=0, size=size, grid=grid, workers=workers)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--grid", type=int, default=3)
    args = parser.parse_args()
    images = sum(max(1, round(n * args.scale)) for n in (6000, 1000, 1000))
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"images per run: {images} ({args.size}x{args.size} px, grid {args.grid}), repeats: {args.repeats}")
    for workers in args.workers:
        times = bench(args.scale, args.repeats, workers, args.size, args.grid)
        median = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"workers={workers}: median {median:.2f} s ({images / median:,.0f} images/s); runs: {runs} s")


if __name__ == "__main__":
    main()
