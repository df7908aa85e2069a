"""`captune sweep CONFIG --grid KEY=V1,V2 ... [--seeds 0,1,2]`: an ablation of adapters in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from captune.cli import app, say


@app.command("sweep")
def sweep_command(
    config: Path = typer.Argument(..., help="Run config (YAML) every variant starts from."),
    grid: list[str] = typer.Option([], "--grid", help="KEY=V1,V2: one axis of the sweep (repeatable), "
                                   "e.g. --grid lora.preset=qformer,lm,qformer+lm"),
    seeds: str | None = typer.Option(None, "--seeds", help="Training seeds, e.g. 0,1,2 (default: the config's)."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory (variants/, scores.json, report.md)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key of the config (repeatable)."),
    backend: str = typer.Option("local", "--backend", help="local (one process, in sequence) or ray (Ray Tune)."),
    cpus: float = typer.Option(1.0, "--cpus-per-trial", help="Ray: CPUs each variant asks for."),
    gpus: float = typer.Option(0.0, "--gpus-per-trial", help="Ray: GPUs each variant asks for."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Train every variant (grid × seeds), evaluate all adapters and the baselines in one grid, report.

    Under torchrun / `accelerate launch` (local backend) each variant trains data parallel and the grid is
    split across the processes; process 0 scores and writes the report."""
    from captune.errors import ConfigError
    from captune.sweep.local import run_sweep
    from captune.sweep.spec import expand, parse_seeds
    from captune.sweep.table import summary_text

    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend {backend!r}: choose local or ray")
    if not grid:
        raise ConfigError("--grid: give at least one axis, e.g. --grid lora.preset=qformer,lm")
    spec = expand(config, grid, parse_seeds(seeds) if seeds else None, out, set_)
    scores = run_sweep(spec, backend=backend, progress=not no_progress, say=say,
                       resources={"cpu": cpus, "gpu": gpus})
    if not scores:  # not process 0 of a multi-process launch: process 0 scores and reports
        return
    typer.echo(summary_text(scores))
    say(f"report: {out / 'report.md'}")
