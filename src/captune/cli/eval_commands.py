"""`captune eval CONFIG` (the baseline grid) and `captune caption --model M [--adapter A] IMAGES...`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from captune.cli import app, say
from captune.config import load_config

console = Console()
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (overrides model.device; auto: CUDA when present)."
DTYPE_HELP = "fp32 | bf16 | fp16 (overrides model.dtype)."


@app.command("eval")
def eval_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set data.max_images=200."),
    adapter: Path | None = typer.Option(None, "--adapter", help="Adapter folder (default: RUN_DIR/adapter)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help=DTYPE_HELP),
) -> None:
    """Run the baseline grid on the eval split: predictions/*.json, scores.json, results.md (resumable)."""
    from captune.grid.run import run_grid
    from captune.grid.shard import current_shard
    from captune.model.device import cli_overrides, resolve_device

    cfg = load_config(config, [*set_, *cli_overrides(device, dtype)])
    resolve_device(cfg.model.device, where="--device" if device else "config key 'model.device'")
    result = run_grid(cfg, adapter_dir=adapter, progress=not no_progress)
    if not current_shard().main:  # under a multi-process launch process 0 scores and reports
        return
    if result.reused:
        say(f"reused finished systems: {', '.join(result.reused)}")
    if result.skipped_images:
        say(f"left out {len(result.skipped_images)} unreadable images from every system; "
            f"first: {result.skipped_images[0]}")
    typer.echo((cfg.run_dir / "results.md").read_text(encoding="utf-8"))
    say(f"scores: {cfg.run_dir / 'scores.json'}")


@app.command("caption")
def caption_command(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: str | None = typer.Option(None, "--model", help="Hub id, model folder, or tiny-opt/tiny-t5 "
                                     "(default: the --config's model, else the adapter's base)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder (PEFT layout)."),
    config: Path | None = typer.Option(None, "--config", help="Run config: its model and generate section are "
                                       "the defaults."),
    prompt: str | None = typer.Option(None, "--prompt", help="Text the caption continues (never echoed; default: "
                                      "the adapter's training prompt, else generate.prompt)."),
    num_beams: int | None = typer.Option(None, "--num-beams"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    sample: bool | None = typer.Option(None, "--sample/--no-sample", help="Nucleus sampling instead of greedy/beam."),
    top_p: float | None = typer.Option(None, "--top-p"),
    num_captions: int | None = typer.Option(None, "--num-captions", help="Captions per image (beams or samples)."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help=DTYPE_HELP),
    as_json: bool = typer.Option(
        False, "--json", help="Print a results JSON ([{file_name, caption}]) that `captune score --pred` reads."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Caption images with a base model, optionally with a LoRA adapter, decoding as the adapter's run
    (or --config's generate section) says unless a flag says otherwise."""
    from captune.generate.files import caption_images, results_json

    result = caption_images(images, model=model, adapter=adapter, config=config, prompt=prompt, num_beams=num_beams,
                            max_new_tokens=max_new_tokens, sample=sample, top_p=top_p, num_captions=num_captions,
                            batch_size=batch_size, device=device, dtype=dtype, progress=not no_progress)
    paths, captions = result.paths, result.captions
    say(f"captioning on {result.device} ({result.dtype})")
    if as_json:
        typer.echo(json.dumps(results_json(paths, captions), ensure_ascii=False, indent=2))
        return
    table = Table("image", "caption")
    for p, caps in zip(paths, captions, strict=True):
        table.add_row(p.name, "\n".join(caps))
    console.print(table)
