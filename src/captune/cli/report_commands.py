"""`captune report RUN_DIR [--format md,html,latex]`: write the report of a finished run into its folder."""

from __future__ import annotations

from pathlib import Path

import typer

from captune.cli import app


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME) holding scores.json from `captune eval`."),
    format_: str = typer.Option("md,html", "--format", help="Comma list of md, html, latex (latex: report.tex)."),
) -> None:
    """Write report.md, a self-contained report.html and figures/*.png (and report.tex) into RUN_DIR."""
    from captune.report import build_report, parse_formats

    paths = build_report(run_dir, parse_formats(format_))
    for label, path in (("markdown", paths.markdown), ("html", paths.html), ("latex", paths.latex)):
        if path is not None:
            typer.echo(f"{label}: {path}")
    if paths.figures:
        typer.echo(f"figures: {', '.join(str(p) for p in paths.figures)}")
