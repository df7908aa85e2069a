"""The sweep's report: the ablation table, paired tests and trainable parameters vs CIDEr.

Everything is read from `DIR/scores.json` (written by `score_all`), so the report is rebuilt from disk
on every run, like `captune report`.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from captune.io import atomic_write_bytes, atomic_write_text
from captune.metrics.results import value_with_ci
from captune.metrics.stats import format_p
from captune.report.tables import md_table

METRICS = [("coco/BLEU-4", "BLEU-4"), ("coco/METEOR", "METEOR"), ("coco/ROUGE-L", "ROUGE-L"),
           ("coco/CIDEr", "CIDEr"), ("div/Duplicate Rate", "dup↓")]
TESTED = [("coco/CIDEr", "CIDEr"), ("coco/BLEU-4", "BLEU-4")]
FIGURE = "params_vs_cider.png"


def _value(scores: dict[str, Any], system: str, metric: str) -> dict[str, Any]:
    return scores["systems"].get(system, {}).get("metrics", {}).get(metric) or {}


def _mean_sd(values: list[float | None], digits: int = 3) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "–"
    if len(got) == 1:
        return f"{got[0]:.{digits}f}"
    return f"{statistics.fmean(got):.{digits}f} ± {statistics.stdev(got):.{digits}f}"


def _params(meta: dict[str, Any]) -> str:
    if meta.get("trainable") is None:
        return "–"
    return f"{meta['trainable']:,} ({meta['trainable_share']:.2%})"


def ablation_rows(scores: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (grid point, adapter system): parameters, training time and metrics, mean ± sd over seeds."""
    sweep = scores["sweep"]
    groups: dict[str, list[str]] = {}
    for name, meta in sweep["variants"].items():
        groups.setdefault(meta["group"], []).append(name)
    rows = []
    for group, names in groups.items():
        meta = sweep["variants"][names[0]]
        for system in sweep["adapter_systems"]:
            row: dict[str, Any] = {"variant": group, "system": system, "seeds": len(names),
                                   "trainable": meta.get("trainable"), "trainable_share": meta.get("trainable_share"),
                                   "params": _params(meta)}
            secs = [sweep["variants"][n].get("train_seconds") for n in names]
            row["train_s"] = _mean_sd(secs, digits=1)
            for metric, label in METRICS:
                vals = [_value(scores, f"{n}/{system}", metric).get("value") for n in names]
                row[label] = _mean_sd(vals)
                row[f"{label}_values"] = vals
            rows.append(row)
    return rows


def per_seed_rows(scores: dict[str, Any]) -> list[list[str]]:
    """Every scored system with its 95 % intervals (baselines first, then each variant × seed)."""
    out = []
    for system in scores["systems_order"]:
        out.append([system] + [value_with_ci(_value(scores, system, m)) for m, _ in METRICS])
    return out


def paired_lines(scores: dict[str, Any]) -> list[list[str]]:
    """(variant system, compared with, Δ and p per tested metric) for every paired test of the sweep."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for c in scores.get("comparisons", []):
        label = dict(TESTED).get(c["metric"])
        if label is None or c.get("delta") is None:
            continue
        rows.setdefault((c["a"], c["b"]), {})[label] = f"{c['delta']:+.3f} ({format_p(c['p_value'], c.get('trials'))})"
    return [[a, b] + [cells.get(label, "–") for _, label in TESTED] for (a, b), cells in rows.items()]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return md_table(header, [[str(c) for c in row] for row in rows])


def _intro(scores: dict[str, Any]) -> str:
    sweep = scores["sweep"]
    grid = ", ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in sweep["grid"])
    return (f"Grid: {grid}; seeds {', '.join(map(str, sweep['seeds']))}; {scores['images']} evaluation images. "
            f"The config's own variant: {sweep['own_group'] or 'not in the grid'}; best baseline (by CIDEr): "
            f"{sweep['best_baseline'] or '–'}.")


def sections(scores: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) of the report's tables, shared by report.md and report.html."""
    labels = [label for _, label in METRICS]
    return [
        ("Ablation (mean ± sd over seeds)",
         ["variant", "system", "seeds", "trainable parameters", "training s", *labels],
         [[r["variant"], r["system"], r["seeds"], r["params"], r["train_s"]] + [r[x] for x in labels]
          for r in ablation_rows(scores)]),
        ("Paired tests (approximate randomisation; Δ = row − compared system)",
         ["system", "compared with"] + [f"Δ {label} (p)" for _, label in TESTED], paired_lines(scores)),
        ("Every system, 95 % bootstrap intervals", ["system", *labels], per_seed_rows(scores)),
    ]


def markdown(scores: dict[str, Any]) -> str:
    lines = ["# captune sweep", "", _intro(scores), ""]
    for title, header, rows in sections(scores):
        lines += [f"## {title}", "", _table(header, rows), ""]
    return "\n".join([*lines, f"![trainable parameters vs CIDEr]({FIGURE})", ""])


def html_page(scores: dict[str, Any], png: bytes | None) -> str:
    """report.html: the same tables and the figure inlined, in the run report's style."""
    from captune.report.html import CSS, _simple_table, data_uri, esc

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>captune sweep</title><style>{CSS}</style>"
             f"</head><body><h1>captune sweep</h1><p>{esc(_intro(scores))}</p>"]
    for title, header, rows in sections(scores):
        parts.append(f"<h2>{esc(title)}</h2>" + _simple_table(header, [[str(c) for c in r] for r in rows], 2))
    if png is not None:
        parts.append(f"<h2>Trainable parameters vs CIDEr</h2><img alt='trainable parameters vs CIDEr' "
                     f"src='{data_uri(png, 'image/png')}'>")
    return "".join(parts) + "</body></html>\n"


def params_figure(scores: dict[str, Any]) -> bytes | None:
    """Trainable parameters vs CIDEr: one point per seed, the mean marked, per grid point and adapter system."""
    from matplotlib.figure import Figure

    from captune.report.figures import ADAPTER_COLOURS, _png

    rows = [r for r in ablation_rows(scores) if r["trainable"]]
    if not rows:
        return None
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for r in rows:
        colour = ADAPTER_COLOURS[systems.index(r["system"]) % len(ADAPTER_COLOURS)]
        vals = [v for v in r["CIDEr_values"] if v is not None]
        if not vals:
            continue
        ax.scatter([r["trainable"]] * len(vals), vals, color=colour, alpha=0.45, s=18)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        ax.errorbar([r["trainable"]], [statistics.fmean(vals)], yerr=[sd], fmt="o", color=colour, capsize=4,
                    label=r["system"] if r is next(x for x in rows if x["system"] == r["system"]) else None)
        ax.annotate(r["variant"], (r["trainable"], statistics.fmean(vals)), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    best = scores["sweep"].get("best_baseline")
    if best and _value(scores, best, "coco/CIDEr").get("value") is not None:
        ax.axhline(_value(scores, best, "coco/CIDEr")["value"], color="#8c8c8c", linestyle="--",
                   label=f"best baseline ({best})")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("CIDEr (points: seeds; bar: mean ± sd)")
    ax.legend(fontsize=8)
    return _png(fig)


def write_report(out: Path, scores: dict[str, Any]) -> Path:
    """DIR/report.md, DIR/report.html and DIR/params_vs_cider.png."""
    png = params_figure(scores)
    if png is not None:
        atomic_write_bytes(out / FIGURE, png)
    atomic_write_text(out / "report.html", html_page(scores, png))
    path = out / "report.md"
    atomic_write_text(path, markdown(scores))
    return path


def summary_text(scores: dict[str, Any]) -> str:
    """What the CLI prints: the ablation table and the paired tests."""
    labels = [label for _, label in METRICS]
    rows = ablation_rows(scores)
    return "\n".join([
        _table(["variant", "system", "trainable", "train s", *labels],
               [[r["variant"], r["system"], r["params"], r["train_s"]] + [r[x] for x in labels] for r in rows]),
        "", "paired tests (Δ = row − compared):",
        _table(["system", "vs"] + [f"Δ {label} (p)" for _, label in TESTED], paired_lines(scores))])
