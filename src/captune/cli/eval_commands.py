"""`captune eval CONFIG` (the baseline grid) and `captune caption --model M [--adapter A] IMAGES...`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from captune.cli import app
from captune.config import config_from_dict, load_config
from captune.errors import ConfigError, DataError

console = Console()
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@app.command("eval")
def eval_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set data.max_images=200."),
    adapter: Path | None = typer.Option(None, "--adapter", help="Adapter folder (default: RUN_DIR/adapter)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Run the baseline grid on the eval split: predictions/*.json, scores.json, results.md (resumable)."""
    from captune.grid.run import run_grid

    cfg = load_config(config, set_)
    result = run_grid(cfg, adapter_dir=adapter, progress=not no_progress)
    if result.reused:
        console.print(f"reused finished systems: {', '.join(result.reused)}")
    if result.skipped_images:
        console.print(f"[yellow]left out {len(result.skipped_images)} unreadable images from every system; "
                      f"first: {result.skipped_images[0]}[/yellow]")
    console.print((cfg.run_dir / "results.md").read_text(encoding="utf-8"))
    console.print(f"scores: {cfg.run_dir / 'scores.json'}")


def _expand(inputs: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        if not item.exists():
            raise DataError(f"{item}: no such image or folder; check the path")
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def results_json(paths: list[Path], captions: list[list[str]]) -> list[dict[str, object]]:
    """One entry per image, named by its path as given: `captune score` matches it to the reference image of
    the same file (a dataset's ids are its own, so no image_id is guessed here). `caption` is the first
    caption, the one scored; `captions` lists all of them (several with --num-captions)."""
    return [{"file_name": p.as_posix(), "caption": c[0] if c else "", "captions": c}
            for p, c in zip(paths, captions, strict=True)]


@app.command("caption")
def caption_command(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: str = typer.Option(..., "--model", help="Hub id, model folder, or tiny-opt/tiny-t5."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder (PEFT layout)."),
    prompt: str = typer.Option("", "--prompt", help="Text the caption continues (never echoed)."),
    num_beams: int = typer.Option(1, "--num-beams"),
    max_new_tokens: int = typer.Option(30, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Nucleus sampling instead of greedy/beam."),
    top_p: float = typer.Option(0.9, "--top-p"),
    num_captions: int = typer.Option(1, "--num-captions", help="Captions per image (beams or samples)."),
    batch_size: int = typer.Option(16, "--batch-size"),
    as_json: bool = typer.Option(
        False, "--json", help="Print a results JSON ([{file_name, caption}]) that `captune score --pred` reads."),
) -> None:
    """Caption images with a base model, optionally with a LoRA adapter."""
    from captune.generate.captioner import Captioner
    from captune.generate.systems import DecodeSettings
    from captune.model.adapters import load_adapter
    from captune.model.load import load_blip2

    for label, value in (("--num-beams", num_beams), ("--max-new-tokens", max_new_tokens),
                         ("--num-captions", num_captions), ("--batch-size", batch_size)):
        if value <= 0:
            raise ConfigError(f"{label}: must be > 0, got {value}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"--top-p: must be in (0, 1], got {top_p}")
    if num_captions > 1 and not sample and num_beams < num_captions:
        raise ConfigError(f"--num-captions {num_captions} needs --sample or --num-beams >= {num_captions}")
    paths = _expand(images)
    cfg = config_from_dict({"model": {"name_or_path": model}})
    loaded = load_blip2(cfg.model)
    net = load_adapter(loaded.model, adapter) if adapter else loaded.model
    settings = DecodeSettings(prompt=prompt, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=sample,
                              top_p=top_p if sample else 1.0, num_return_sequences=num_captions)
    captions = Captioner(net, loaded.processor, loaded.family).caption_paths(
        [str(p) for p in paths], settings, adapter=adapter is not None, batch_size=batch_size)
    if as_json:
        typer.echo(json.dumps(results_json(paths, captions), ensure_ascii=False, indent=2))
        return
    table = Table("image", "caption")
    for p, caps in zip(paths, captions, strict=True):
        table.add_row(p.name, "\n".join(caps))
    console.print(table)
