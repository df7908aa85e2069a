"""Report figures as PNG bytes: training curves, metric bars with intervals, and caption mode collapse.

Matplotlib's object API with the Agg canvas (no pyplot), so building a report never touches a
display or the process-wide backend; each figure is rendered to memory and written atomically.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from captune.io import atomic_write_bytes
from captune.metrics.diversity import normalise
from captune.progress import Bar
from captune.report.load import RunData
from captune.report.tables import MainTable

KEY_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
REFERENCE_COLOUR = "#8c8c8c"
ADAPTER_COLOURS = ("#d95f02", "#e6ab02", "#a6761d", "#e7298a")
OTHER_COLOURS = ("#1b9e77", "#1f78b4", "#7570b3", "#66a61e", "#17becf")
HUMAN_COLOUR = "#222222"
DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.set_layout_engine("tight")  # laid out while drawing: bbox_inches="tight" drew every figure twice
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def system_colours(run: RunData) -> dict[str, str]:
    """Grey for the reference, warm colours for adapted systems, cool ones for the rest — in every figure."""
    out, warm, cool = {}, 0, 0
    for system in run.systems:
        if system == run.reference:
            out[system] = REFERENCE_COLOUR
        elif run.settings.get(system, {}).get("adapter"):
            out[system] = ADAPTER_COLOURS[warm % len(ADAPTER_COLOURS)]
            warm += 1
        else:
            out[system] = OTHER_COLOURS[cool % len(OTHER_COLOURS)]
            cool += 1
    return out


def loss_figure(run: RunData) -> bytes | None:
    """Training loss per optimizer step, validation loss (when logged) on the same axes."""
    train = [(r["step"], r["loss"]) for r in run.train_log if isinstance(r.get("loss"), (int, float))]
    val = [(r["step"], r["val_loss"]) for r in run.train_log if isinstance(r.get("val_loss"), (int, float))]
    if not train and not val:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    if len(train) > 50:  # thousands of noisy steps: faint raw curve under a running mean
        import numpy as np

        steps, losses = (np.asarray(v, dtype=float) for v in zip(*train, strict=True))
        window = max(5, len(train) // 50)
        mean = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps, losses, color="#1f77b4", lw=0.8, alpha=0.3, label="training loss (per step)")
        ax.plot(steps[window - 1:], mean, color="#1f77b4", lw=1.8, label=f"running mean ({window} steps)")
    elif train:
        ax.plot(*zip(*train, strict=True), color="#1f77b4", lw=1.6, label="training loss (per step)")
    if val:
        ax.plot(*zip(*val, strict=True), color="#d62728", lw=1.6, marker="o", ms=5, label="validation loss")
    skipped = [r["step"] for r in run.train_log if r.get("skipped")]
    if skipped:
        ax.vlines(skipped, 0, 1, transform=ax.get_xaxis_transform(), colors="#999999", lw=0.8, linestyles=":",
                  label=f"skipped steps ({len(skipped)})")
    best = (run.train_summary or {}).get("best_step")
    if best:
        ax.axvline(best, color="#2ca02c", lw=1.2, ls="--", label=f"kept adapter (step {best})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("token cross-entropy (nats)")
    ax.set_title(f"Training curve — {run.name}")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _png(fig)


def metric_bars(run: RunData, table: MainTable) -> bytes | None:
    """One panel per key metric: a bar per system with its 95 % interval; the human row as a dashed line."""
    picked = [i for i, c in enumerate(table.columns) if c.label in KEY_METRICS
              and any(r.cells[i].value is not None for r in table.rows if r.kind != "human")]
    if not picked:
        return None
    systems = [r for r in table.rows if r.kind != "human"]
    human = next((r for r in table.rows if r.kind == "human"), None)
    height = max(2.6, 0.45 * len(systems) + 1.4)
    fig = Figure(figsize=(3.4 * len(picked) + 1.2, height))
    axes = fig.subplots(1, len(picked), sharey=True, squeeze=False)[0]
    ys = list(range(len(systems)))[::-1]
    for ax, i in zip(axes, picked, strict=True):
        values = [r.cells[i].value or 0.0 for r in systems]
        lo = [max(0.0, v - r.cells[i].ci_low) if r.cells[i].ci_low is not None else 0.0
              for v, r in zip(values, systems, strict=True)]
        hi = [max(0.0, r.cells[i].ci_high - v) if r.cells[i].ci_high is not None else 0.0
              for v, r in zip(values, systems, strict=True)]
        palette = system_colours(run)
        colours = [palette.get(r.system, REFERENCE_COLOUR) for r in systems]
        ax.barh(ys, values, xerr=[lo, hi], color=colours, capsize=3, error_kw={"lw": 1.1, "ecolor": "#333333"})
        top = max([v + h for v, h in zip(values, hi, strict=True)] + [1e-9])
        if human is not None and human.cells[i].value is not None:
            ax.axvline(human.cells[i].value, color=HUMAN_COLOUR, ls="--", lw=1.3, label="human (leave-one-out)")
            top = max(top, human.cells[i].value)
        for y, v, h, r in zip(ys, values, hi, systems, strict=True):
            mark = "*" if r.cells[i].significant else ""
            ax.text(v + h + top * 0.03, y, f"{v:.3f}{mark}", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.35)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set_title(table.metrics[i], fontsize=10)
        ax.set_xlabel("score (higher is better)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [r.system for r in systems])
    human_note = "; dashed line: human (leave-one-out)" if human is not None else ""
    fig.suptitle(f"Key metrics with {round(table.ci_level * 100)}% bootstrap intervals\n"
                 f"grey: reference, warm colours: LoRA systems; * p < 0.05 vs reference{human_note}", fontsize=10)
    fig.subplots_adjust(top=0.78 if len(systems) < 5 else 0.86, wspace=0.15)
    return _png(fig)


def caption_counts(run: RunData, system: str) -> list[int]:
    """How many images got each distinct caption (compared as `div/Duplicate Rate` compares), descending."""
    captions = run.predictions.get(system)
    if captions is not None:
        return sorted(Counter(normalise(c) for c in captions.values()).values(), reverse=True)
    top = run.scores["systems"][system].get("top_captions") or []
    return [int(n) for _, n in top]


def mode_collapse_figure(run: RunData, table: MainTable) -> bytes | None:
    """Rank–frequency of each system's captions (log scale) beside its duplicate and repetition rates."""
    counts = {s: caption_counts(run, s) for s in run.systems}
    if not any(counts.values()):
        return None
    fig = Figure(figsize=(12, 4.6))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    styles = ["-", "--", "-.", ":"]
    palette = system_colours(run)
    for k, (system, c) in enumerate(counts.items()):
        if c:
            # Markers only where they can be told apart: thousands of them drew for 1.5 s and hid the lines.
            left.plot(range(1, len(c) + 1), c, marker="o" if len(c) <= 40 else None, ms=4, lw=1.6,
                      ls=styles[k % len(styles)],
                      color=palette[system], label=f"{system} ({len(c)} distinct of {sum(c)})")
    left.set_xscale("log")
    left.set_yscale("log")
    for axis in (left.xaxis, left.yaxis):  # plain counts (1, 10, 100), not 10^k
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left.set_xlabel("caption rank (1 = most frequent)")
    left.set_ylabel("images given this caption")
    left.set_title("Caption rank–frequency (a steep head = mode collapse)")
    left.grid(alpha=0.3, which="both")
    left.legend(frameon=False, fontsize=8)

    labels = [("Duplicate Rate", "duplicate-caption rate ↓"), ("Repetition Rate", "repetition rate (seq-rep-4) ↓")]
    cols = {c.label: i for i, c in enumerate(table.columns)}
    rows = [r for r in table.rows if r.kind != "human"]
    width = 0.38
    xs = range(len(rows))
    for k, (label, text) in enumerate(labels):
        if label not in cols:
            continue
        vals = [r.cells[cols[label]].value or 0.0 for r in rows]
        bars = right.bar([x + (k - 0.5) * width for x in xs], vals, width, label=text,
                         color=["#e7298a", "#66a61e"][k])
        for bar, v in zip(bars, vals, strict=True):
            right.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    right.set_xticks(list(xs), [r.system for r in rows], rotation=20, ha="right")
    right.set_ylim(0, 1.2)
    right.set_ylabel("share (lower is better)")
    right.set_title("Duplicate captions and within-caption repetition")
    right.grid(axis="y", alpha=0.3)
    right.legend(frameon=False, fontsize=8, loc="upper center", ncol=2)
    return _png(fig)


FIGURES = {
    "loss.png": "Training (and validation) loss per optimizer step",
    "metrics.png": "Key metrics per system with bootstrap intervals",
    "mode_collapse.png": "Caption rank–frequency and duplicate / repetition rates",
}


def write_figures(run: RunData, table: MainTable, out_dir: Path, progress: bool = False) -> dict[str, Path]:
    """Render every figure the run has data for; returns file name -> path (absent ones are left out)."""
    makers = {"loss.png": lambda: loss_figure(run), "metrics.png": lambda: metric_bars(run, table),
              "mode_collapse.png": lambda: mode_collapse_figure(run, table)}
    paths = {}
    with Bar("report figures", len(makers), progress) as bar:
        for name, make in makers.items():
            data = make()
            if data is not None:
                atomic_write_bytes(out_dir / name, data)
                paths[name] = out_dir / name
            bar.advance()
    return paths
