"""The report stage: a finished run directory in, report.md / report.html / report.tex / figures out.

It reads only what earlier stages wrote (scores.json required; config, training log and summary,
timings, predictions, alignment.json optional) plus the dataset's images for the gallery, so it can
be rerun alone at any time (`captune report RUN_DIR`). Every file is written atomically.

    from captune.report import build_report
    paths = build_report("runs/NAME", formats=("md", "html", "latex"))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from captune.errors import UserError
from captune.io import atomic_write_bytes, atomic_write_text
from captune.report.latex import main_table_latex
from captune.report.load import RunData, load_run
from captune.report.tables import MainTable, legend, main_table, reading_note

if TYPE_CHECKING:
    from captune.report.gallery import Gallery

FORMATS = ("md", "html", "latex")
FIG_DIR = "figures"
GALLERY_DIR = "figures/gallery"


@dataclass
class ReportPaths:
    """What `build_report` wrote (None for formats not asked for)."""

    run_dir: Path
    markdown: Path | None = None
    html: Path | None = None
    latex: Path | None = None
    figures: list[Path] = field(default_factory=list)
    thumbnails: list[Path] = field(default_factory=list)


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """`"md,html"` or an iterable -> validated formats in canonical order."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    wanted = [f.strip().lower() for f in items if f.strip()]
    aliases = {"markdown": "md", "tex": "latex", "htm": "html"}
    wanted = [aliases.get(f, f) for f in wanted]
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise UserError(f"--format: unknown format {bad[0]!r}; use a comma list of md, html, latex" if bad
                        else "--format: empty; use a comma list of md, html, latex")
    return tuple(f for f in FORMATS if f in wanted)


def _write_thumbnails(gallery: Gallery, run_dir: Path) -> dict[int, Path]:
    """figures/gallery/ID.jpg for report.md; thumbnails of an earlier report's gallery are removed."""
    out = {}
    for item in gallery.items:
        if item.thumbnail is not None:
            path = run_dir / GALLERY_DIR / f"{item.image_id}.jpg"
            atomic_write_bytes(path, item.thumbnail)
            out[item.image_id] = path
    folder = run_dir / GALLERY_DIR
    if folder.is_dir():
        for old in folder.glob("*.jpg"):
            if old not in out.values():
                old.unlink(missing_ok=True)
    return out


def build_report(run_dir: str | Path, formats: str | Iterable[str] = ("md", "html"),
                 progress: bool = False) -> ReportPaths:
    """Write the asked-for report files and the figures into the run directory; return their paths."""
    wanted = parse_formats(formats)
    run: RunData = load_run(run_dir, with_images=bool({"md", "html"} & set(wanted)))
    # Imported here: matplotlib and the metrics package cost seconds, and a bad RUN_DIR should fail at once.
    from captune.report.figures import FIGURES, write_figures
    from captune.report.gallery import build_gallery
    from captune.report.markdown import render_markdown
    from captune.report.setup_info import setup_sections

    table: MainTable = main_table(run)
    paths = ReportPaths(run.run_dir)
    if "latex" in wanted:
        paths.latex = run.run_dir / "report.tex"
        atomic_write_text(paths.latex, main_table_latex(table, f"run {run.name}, {run.scores.get('images')} images"))
    if not {"md", "html"} & set(wanted):
        return paths

    figures = write_figures(run, table, run.run_dir / FIG_DIR, progress)
    paths.figures = list(figures.values())
    gallery = build_gallery(run)
    sections = setup_sections(run)
    if "md" in wanted:
        thumbs = _write_thumbnails(gallery, run.run_dir)
        paths.thumbnails = list(thumbs.values())
        rel = {i: p.relative_to(run.run_dir).as_posix() for i, p in thumbs.items()}
        text = render_markdown(run, sections, table, {n: FIGURES[n] for n in figures}, gallery, rel)
        paths.markdown = run.run_dir / "report.md"
        atomic_write_text(paths.markdown, text)
    if "html" in wanted:
        from captune.report.html import render_html

        page = render_html(run, sections, table, {n: (FIGURES[n], p.read_bytes()) for n, p in figures.items()},
                           gallery, legend(table, run), reading_note(table, run.scores.get("images")))
        paths.html = run.run_dir / "report.html"
        atomic_write_text(paths.html, page)
    return paths


__all__ = ["FORMATS", "ReportPaths", "build_report", "load_run", "main_table", "parse_formats"]
