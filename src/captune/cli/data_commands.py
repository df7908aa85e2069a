"""Data commands: `captune data check PATH` and `captune data synth OUT`."""

from __future__ import annotations

from pathlib import Path

import typer

from captune.cli import app
from captune.errors import ConfigError, DataError

data_app = typer.Typer(
    name="data",
    help="Inspect captioning datasets and generate the synthetic fine-grained benchmark.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def check_command(
    path: Path = typer.Argument(..., help="Dataset folder, Karpathy/COCO JSON, JSONL/CSV file or imagefolder."),
    format: str = typer.Option(
        "auto", "--format", help="auto, flickr8k, karpathy, coco, jsonl, csv or imagefolder."
    ),
    image_root: Path | None = typer.Option(None, "--image-root", help="Folder the captions' file names are in."),
    threads: int = typer.Option(0, "--threads", help="Reader threads (0 = up to 4)."),
    decode: bool = typer.Option(
        True, "--decode/--header-only", help="Decode images (reduced size) to catch truncated files."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    """Survey a dataset: counts per split, bad or duplicate images, caption problems, image sizes.

    Lists missing, unreadable and duplicate (identical) images, empty and repeated captions and ids with
    no image. Exit code 1 only when nothing can be loaded; other problems are reported, not fatal.
    """
    from captune.data.check import check_dataset, format_report
    from captune.io import atomic_write_json

    if threads < 0:
        raise ConfigError(f"--threads: must be >= 0 (0 = up to 4), got {threads}")
    report = check_dataset(path, format=format, image_root=image_root, threads=threads or None, decode=decode)
    typer.echo(format_report(report))
    if json_out is not None:
        atomic_write_json(json_out, report.to_dict())
    if report.fatal:
        raise DataError(f"{path}: no image with a caption could be loaded; fix the problems listed above")


@data_app.command("synth")
def synth_command(
    out: Path = typer.Argument(..., help="Output folder (new, empty, or an earlier synthetic dataset)."),
    scale: float = typer.Option(1.0, "--scale", help="Fraction of Flickr8K's 6,000/1,000/1,000 split sizes."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same settings: byte-identical files."),
    size: int = typer.Option(64, "--size", help="Image side in pixels; use grid x ViT patch for one patch per cell."),
    grid: int = typer.Option(3, "--grid", help="Cells per side; each object fills one cell."),
    max_objects: int = typer.Option(3, "--max-objects", help="Objects per image: 1 to this."),
    workers: int = typer.Option(1, "--workers", help="Render processes (output does not depend on it)."),
) -> None:
    """Write a seeded fine-grained captioning benchmark in the Flickr8K layout, with ground truth."""
    from captune.data.synth import TRUTH_FILE, generate_synth

    summary = generate_synth(out, scale=scale, seed=seed, size=size, grid=grid, max_objects=max_objects,
                             workers=workers)
    sizes = ", ".join(f"{k} {v}" for k, v in summary.split_sizes.items())
    typer.echo(f"wrote {summary.images} images ({sizes}) to {summary.out} in {summary.seconds:.1f} s; "
               f"ground truth in {summary.out / TRUTH_FILE}")
