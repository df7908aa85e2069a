"""`captune report RUN_DIR [--format md,html,latex]`: write the report of a finished run into its folder."""

from __future__ import annotations

from pathlib import Path

import typer

from captune.cli import app, say


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME) holding scores.json from `captune eval`."),
    format_: str = typer.Option("md,html", "--format", help="Comma list of md, html, latex (latex: report.tex)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Write report.md, a self-contained report.html and figures/*.png (and report.tex) into RUN_DIR."""
    from captune.report import build_report, parse_formats

    paths = build_report(run_dir, parse_formats(format_), progress=not no_progress)
    for label, path in (("markdown", paths.markdown), ("html", paths.html), ("latex", paths.latex)):
        if path is not None:
            say(f"{label}: {path}")
    if paths.figures:
        say(f"figures: {', '.join(str(p) for p in paths.figures)}")
