"""`captune score`: score prediction files (or the human baseline) and write scores.json atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from captune.cli import app, say
from captune.errors import DataError

_HEADLINE = ("coco/BLEU-4", "coco/METEOR", "coco/ROUGE-L", "coco/CIDEr", "coco/SPICE")


def _system_name(spec: str, taken: set[str]) -> tuple[str, Path]:
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
    else:
        path, name = spec, Path(spec).stem
    if not name:
        raise DataError(f"--pred {spec!r}: empty system name; use NAME=PATH or a file name")
    if name in taken:
        raise DataError(f"--pred {spec!r}: system name {name!r} given twice; use NAME=PATH to rename one")
    taken.add(name)
    return name, Path(path)


def _fmt(m: dict[str, Any]) -> str:
    v = m.get("value")
    if v is None:
        return "-"
    text = f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f" [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
    return text


def print_report(report: dict[str, Any]) -> None:
    """A readable table: metrics down, systems across, 95% CI in brackets; then what is missing."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    systems = report["systems"]
    names = list(systems)
    metrics: list[str] = []
    for s in systems.values():
        metrics += [k for k in s["metrics"] if k not in metrics]
    level = round(100 * report["settings"].get("ci_level", 0.95))
    table = Table(title=f"{report['images']} images — value [{level}% bootstrap CI]")
    table.add_column("metric", style="bold")
    for name in names:
        table.add_column(name, justify="right")
    for metric in metrics:
        label = metric + (" (Repetition Rate)" if metric == report.get("aliases", {}).get("Repetition Rate") else "")
        table.add_row(label, *[_fmt(systems[n]["metrics"].get(metric, {})) for n in names])
    console.print(table)
    comps = [c for c in report.get("comparisons", []) if c["metric"] in _HEADLINE]
    if comps:
        from captune.metrics.stats import format_p, holm_texts

        t2 = Table(title=f"paired test vs baseline (approximate randomisation, two-sided): {len(comps)} comparisons, "
                         "Holm-adjusted p beside the raw p")
        for col in ("system", "baseline", "metric", "delta", "p", "p (Holm)"):
            t2.add_column(col, justify="left" if col in ("system", "baseline", "metric") else "right")
        adjusted = holm_texts([(c["p_value"], c.get("trials")) for c in comps])
        for c, (_, holm_text) in zip(comps, adjusted, strict=True):
            t2.add_row(c["a"], c["b"], c["metric"], f"{c['delta']:+.4f}", format_p(c["p_value"], c.get("trials"),
                       prefix=False), holm_text)
        console.print(t2)
    from captune.metrics.diversity import REPETITION_NOTE, REPETITION_RATE, TTR_NOTE

    if "div/TTR" in metrics:
        console.print(f"[dim]{TTR_NOTE.format(images=report['images'])}[/dim]", highlight=False)
    if REPETITION_RATE in metrics:
        console.print(f"[dim]{REPETITION_NOTE}[/dim]", highlight=False)
    for metric, why in report.get("unavailable", {}).items():
        console.print(f"[yellow]{metric}: {why}[/yellow]", highlight=False)
    for note in report.get("notes", []):
        console.print(f"[dim]note: {note}[/dim]", highlight=False)


@app.command("score")
def score(
    pred: list[str] = typer.Option(
        None, "--pred", help="Predictions: COCO results JSON ([{image_id, caption}]) or [{file_name, caption}] "
        "(as `captune caption --json` writes); repeat for several systems; NAME=PATH to name one."
    ),
    refs: str = typer.Option(
        None, "--refs",
        help="References: a dataset path, a COCO captions annotations JSON, or {image_id: \\[refs]} JSON.",
    ),
    split: str = typer.Option("eval", "--split", help="Dataset split when --refs is a dataset (eval = val+test)."),
    metrics: str = typer.Option("coco,rouge,nltk,diversity", "--metrics", help="Metric families, comma-separated."),
    out: Path = typer.Option(None, "--out", help="Write scores JSON here (atomically)."),
    baseline: str = typer.Option(None, "--baseline", help="System the others are tested against (default: first)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Bootstrap resamples for CIs."),
    trials: int = typer.Option(1000, "--trials", min=1, help="Approximate-randomisation trials for paired tests."),
    seed: int = typer.Option(0, "--seed", help="Seed for resampling."),
    spice: bool = typer.Option(None, "--spice/--no-spice", help="SPICE: default runs it only if it can."),
    self_bleu: bool = typer.Option(False, "--self-bleu", help="Also compute Self-BLEU (diversity)."),
    per_image: bool = typer.Option(True, "--per-image/--no-per-image", help="Store per-image scores in --out."),
    human_baseline: str = typer.Option(
        None, "--human-baseline", help="Score each reference against the others (rotating leave-one-out) on DATA."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the table."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Score captions with COCO, rouge-score, NLTK and diversity metrics, with bootstrap CIs."""
    from captune.io import atomic_write_json

    families = [m.strip() for m in metrics.split(",") if m.strip()]
    started = time.perf_counter()
    report = _score(pred, refs, split, families, baseline, bootstrap, trials, seed, spice, self_bleu,
                    per_image, human_baseline, progress=not no_progress)
    report["seconds"] = round(time.perf_counter() - started, 2)
    if out is not None:
        atomic_write_json(out, report)
    if not quiet:
        print_report(report)
    if out is not None:
        say(f"wrote {out}")


def _score(pred: list[str] | None, refs: str | None, split: str, families: list[str], baseline: str | None,
           bootstrap: int, trials: int, seed: int, spice: bool | None, self_bleu: bool, per_image: bool,
           human_baseline: str | None, progress: bool = False) -> dict[str, Any]:
    from captune.metrics.files import score_predictions

    if human_baseline is not None and pred:
        raise DataError("--human-baseline scores the references themselves; do not pass --pred with it")
    if human_baseline is None and not pred:
        raise DataError("give at least one --pred PREDICTIONS.json (or --human-baseline DATA)")
    if human_baseline is None and refs is None:
        raise DataError("--refs is required: a dataset path, COCO annotations JSON or {image_id: [refs]} JSON")
    taken: set[str] = set()
    predictions = dict(_system_name(spec, taken) for spec in pred or [])
    return score_predictions(predictions, human_baseline or refs, split=split, metrics=families, baseline=baseline,
                             bootstrap=bootstrap, trials=trials, seed=seed, spice=spice, self_bleu=self_bleu,
                             per_image=per_image, human_baseline=human_baseline is not None, progress=progress)
