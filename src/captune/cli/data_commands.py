"""Data commands: `captune data check PATH` and `captune data synth OUT`."""

from __future__ import annotations

from pathlib import Path

import typer

from captune.cli import app, deprecated, say
from captune.errors import ConfigError, DataError

data_app = typer.Typer(
    name="data",
    help="Inspect captioning datasets and generate the synthetic fine-grained benchmark.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("check", context_settings={"allow_extra_args": True})
def check_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Dataset folder, Karpathy/COCO JSON, JSONL/CSV file or imagefolder."),
    data_format: str = typer.Option(
        "auto", "--data-format", help="auto, flickr8k, karpathy, coco, jsonl, csv or imagefolder (as data.format)."
    ),
    format_: str | None = typer.Option(None, "--format", hidden=True, help="Old spelling of --data-format."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Folder the captions' file names are in."),
    threads: int = typer.Option(0, "--threads", help="Reader threads (0 = up to 4)."),
    decode: bool = typer.Option(
        True, "--decode/--header-only", help="Decode images (reduced size) to catch truncated files."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of text."),
    out: Path | None = typer.Option(None, "--out", help="Also write the report as JSON here (atomically)."),
) -> None:
    """Survey a dataset: counts per split, bad or duplicate images, caption problems, image sizes.

    Lists missing, unreadable and duplicate (identical) images, empty and repeated captions and ids with
    no image. Exit code 1 only when nothing can be loaded; other problems are reported, not fatal.
    """
    import json

    from captune.data.check import check_dataset, format_report
    from captune.io import atomic_write_json

    if ctx.args:  # `--json PATH` was the old way to write the JSON file
        if not (as_json and len(ctx.args) == 1):
            raise ConfigError(f"unexpected argument {ctx.args[0]!r}; see `captune data check --help`")
        deprecated("--json PATH", "--out PATH (and --json to print JSON)")
        out, as_json = Path(ctx.args[0]), False
    if format_ is not None:
        deprecated("--format", "--data-format")
        data_format = format_
    if threads < 0:
        raise ConfigError(f"--threads: must be >= 0 (0 = up to 4), got {threads}")
    report = check_dataset(path, format=data_format, image_root=image_root, threads=threads or None, decode=decode)
    typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if as_json else format_report(report))
    if out is not None:
        atomic_write_json(out, report.to_dict())
        say(f"wrote {out}")
    if report.fatal:
        raise DataError(f"{path}: no image with a caption could be loaded; fix the problems listed above")


@data_app.command("synth")
def synth_command(
    out: Path | None = typer.Option(None, "--out", help="Output folder (new, empty, or an earlier synthetic dataset)."),
    out_arg: Path | None = typer.Argument(None, hidden=True, help="Old spelling of --out."),
    scale: float = typer.Option(1.0, "--scale", help="Fraction of Flickr8K's 6,000/1,000/1,000 split sizes."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same settings: byte-identical files."),
    size: int = typer.Option(64, "--size", help="Image side in pixels; use grid x ViT patch for one patch per cell."),
    grid: int = typer.Option(3, "--grid", help="Cells per side; each object fills one cell."),
    max_objects: int = typer.Option(3, "--max-objects", help="Objects per image: 1 to this."),
    workers: int = typer.Option(1, "--workers", help="Render processes (output does not depend on it)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Write a seeded fine-grained captioning benchmark in the Flickr8K layout, with ground truth."""
    from captune.demo.synth import TRUTH_FILE, generate_synth

    if out_arg is not None:
        if out is not None:
            raise ConfigError(f"give the output folder once: --out {out} or {out_arg}, not both")
        deprecated("`captune data synth OUT`", "`captune data synth --out OUT`")
        out = out_arg
    if out is None:
        raise ConfigError("missing --out DIR: the folder the benchmark is written to")
    summary = generate_synth(out, scale=scale, seed=seed, size=size, grid=grid, max_objects=max_objects,
                             workers=workers, progress=not no_progress)
    sizes = ", ".join(f"{k} {v}" for k, v in summary.split_sizes.items())
    say(f"wrote {summary.images} images ({sizes}) to {summary.out} in {summary.seconds:.1f} s; "
               f"ground truth in {summary.out / TRUTH_FILE}")
