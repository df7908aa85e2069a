"""`captune train CONFIG [--set k=v ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from captune.cli import app, say
from captune.config import RunConfig, load_config
from captune.errors import ConfigError

if TYPE_CHECKING:
    from captune.data.records import LoadedDataset

console = Console()


def _check_enough_captions(cfg: RunConfig, dataset: LoadedDataset) -> None:
    """One optimizer step needs batch_size x grad_accum captions; with fewer the epoch loop never steps."""
    tc = cfg.train
    records = dataset.select(cfg.data.train_split)
    pairs = sum(len(r.refs) for r in records) if tc.captions_per_image == "all" else sum(1 for r in records if r.refs)
    per_step = tc.batch_size * tc.grad_accum
    if records and pairs < per_step:
        raise ConfigError(
            f"config key 'train.batch_size': split {cfg.data.train_split!r} of {cfg.data.path} has {pairs} training "
            f"captions, fewer than one step's train.batch_size x train.grad_accum = {per_step}; lower "
            "train.batch_size (or add data)"
        )


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set train.lr=1e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs still written)."),
) -> None:
    """Fine-tune LoRA adapters (frozen ViT and LM) and write the run directory."""
    from captune.data import load_dataset_from_config
    from captune.train.loop import train

    cfg = load_config(config, set_)
    dataset = load_dataset_from_config(cfg.data)
    _check_enough_captions(cfg, dataset)
    result = train(cfg, resume=resume, progress=not no_progress, dataset=dataset)
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

    cfg = load_config(config, set_)
    result = run_pipeline(cfg, progress=not no_progress)
    results_md = cfg.run_dir / "results.md"
    if results_md.is_file():
        typer.echo(results_md.read_text(encoding="utf-8"))
    say(f"run directory: {result.run_dir}" + (f"; report: {result.report}" if result.report else ""))
