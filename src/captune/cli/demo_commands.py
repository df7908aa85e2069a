"""`captune demo`: the main job on a built-in default (CPU, offline, ~2 minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from captune.cli import app, deprecated, one_process_only

console = Console(width=None if sys.stdout.isatty() else 110)  # piped: rich would assume 80 columns
status = Console(stderr=True, highlight=False)


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs"), "--out", help="Where the run directory `demo/` goes."),
    out_dir: Path | None = typer.Option(None, "--out-dir", hidden=True, help="Old spelling of --out."),
    fresh: bool = typer.Option(False, "--fresh", help="Rebuild the dataset, base model and run from scratch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the base model and LoRA training."),
    scale: float = typer.Option(1.0, "--scale", help="Shrink the benchmark (e.g. 0.05 for a quick look)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache for dataset and base model."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ablation: bool = typer.Option(False, "--ablation", help="After `captune demo`: LoRA placements qformer, lm, "
                                  "qformer+lm, qformer+lm-wide x 3 seeds, one grid, ablation table (OUT/ablation)."),
) -> None:
    """Zero-shot collapse vs prompts, sampling and LoRA on a synthetic fine-grained benchmark, with a report."""
    from captune.demo.pipeline import run_demo

    one_process_only("demo")

    if out_dir is not None:
        deprecated("--out-dir", "--out")
        out = out_dir
    if not 0 < scale <= 1:
        from captune.errors import ConfigError

        raise ConfigError(f"--scale: must be in (0, 1], got {scale}")
    if ablation:
        from captune.sweep.demo import run_ablation
        from captune.sweep.table import summary_text

        scores = run_ablation(out, scale=scale, cache_dir=cache_dir, progress=not no_progress,
                              say=lambda s: status.print(s))
        typer.echo(summary_text(scores))  # markdown: rich would wrap its rows
        status.print(f"report: {out / 'ablation' / 'report.md'}")
        return
    result = run_demo(out_dir=out, fresh=fresh, seed=seed, scale=scale, cache_dir=cache_dir,
                      progress=not no_progress, say=lambda s: status.print(s))
    table = Table(title="captune demo: frozen base vs baselines vs LoRA (eval split)")
    columns = list(result.rows[0]) if result.rows else []
    for c in columns:
        table.add_column(c, justify="left" if c == "system" else "right")
    for row in result.rows:
        table.add_row(*[row[c] if isinstance(row[c], str) else ("–" if row[c] is None else f"{row[c]:.3f}")
                        for c in columns])
    console.print(table)
    for line in result.versus:
        console.print(line)
    status.print(f"done in {result.timings['total']:.0f} s; run directory: {result.run_dir}")
    if result.report:
        status.print(f"report: {result.report}")
