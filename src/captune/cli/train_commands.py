"""`captune train CONFIG [--set k=v ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from captune.cli import app, one_process_only, say
from captune.config import load_config

console = Console()


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set train.lr=1e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs still written)."),
) -> None:
    """Fine-tune LoRA adapters (frozen ViT and LM) and write the run directory."""
    from captune.api import finetune

    cfg = load_config(config, set_)
    result = finetune(cfg, resume=resume, progress=not no_progress)
    if result.summary:
        s = result.summary
        console.print(
            f"trained {s['steps']} steps ({s['samples']} samples, {s['bad_steps']} skipped) in "
            f"{s['train_seconds']:.1f} s; final loss {s['final_loss']}; adapter: {cfg.run_dir / 'adapter'}"
        )


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key (repeatable)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Train, run the evaluation grid and write the report in one run directory (rerun to resume)."""
    from captune.pipeline import run_pipeline

    one_process_only("run")

    cfg = load_config(config, set_)
    result = run_pipeline(cfg, progress=not no_progress)
    results_md = cfg.run_dir / "results.md"
    if results_md.is_file():
        typer.echo(results_md.read_text(encoding="utf-8"))
    say(f"run directory: {result.run_dir}" + (f"; report: {result.report}" if result.report else ""))
