"""The main results table (every system against the reference), as data and as Markdown (LaTeX: latex.py).

The table is built once as data (`MainTable`) and only then rendered, so Markdown, HTML and LaTeX
show the same numbers, rounded the same way. Column headers carry the implementation prefix
(`coco/`, `rouge/`, `nltk/`, `div/`) because e.g. COCO's BLEU and NLTK's BLEU differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from captune.metrics.diversity import REPETITION_NOTE, TTR_NOTE
from captune.metrics.stats import format_p, holm_texts
from captune.report.load import RunData

ALPHA = 0.05
DIGITS = 3


@dataclass(frozen=True)
class Column:
    """One metric column: the first candidate the run has values for is shown."""

    label: str
    candidates: tuple[str, ...]
    lower_better: bool = False


MAIN_COLUMNS: tuple[Column, ...] = (
    *(Column(f"BLEU-{n}", (f"coco/BLEU-{n}", f"nltk/BLEU-{n}")) for n in range(1, 5)),
    Column("ROUGE-1", ("rouge/ROUGE-1",)),
    Column("ROUGE-2", ("rouge/ROUGE-2",)),
    Column("ROUGE-L", ("rouge/ROUGE-L", "coco/ROUGE-L")),
    Column("METEOR", ("coco/METEOR", "nltk/METEOR")),
    Column("CIDEr", ("coco/CIDEr",)),
    Column("TTR", ("div/TTR",)),
    Column("Repetition Rate", ("div/seq-rep-4",), lower_better=True),
    Column("Duplicate Rate", ("div/Duplicate Rate",), lower_better=True),
    Column("distinct-1", ("div/distinct-1",)),
    Column("distinct-2", ("div/distinct-2",)),
)

IMPLEMENTATIONS = {
    "coco": "pycocoevalcap-equal COCO caption evaluation (PTB tokenizer; BLEU, METEOR 1.5, ROUGE-L, CIDEr-D)",
    "rouge": "Google's rouge-score package, F1 (its tokenizer, no stemming), best reference per image, averaged",
    "nltk": "NLTK paper-style: corpus_bleu without smoothing; meteor_score averaged per image (not METEOR 1.5)",
    "div": "captune.metrics.diversity (Welleck et al. seq-rep-n, Li et al. distinct-n, TTR, duplicate captions)",
}


@dataclass
class Cell:
    """One number of the table with its interval and its comparison with the reference."""

    metric: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    delta: float | None = None
    p_value: float | None = None
    trials: int | None = None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA


@dataclass
class Row:
    system: str
    kind: str  # "reference", "system" or "human"
    cells: list[Cell]


@dataclass
class MainTable:
    columns: list[Column]
    metrics: list[str]
    rows: list[Row]
    reference: str
    test: str
    ci_level: float
    unavailable: dict[str, str] = field(default_factory=dict)

    def header(self, i: int) -> str:
        """`coco/BLEU-1 ↑`; a label that is not the metric's own name keeps the name in brackets."""
        col, metric = self.columns[i], self.metrics[i]
        arrow = "↓" if col.lower_better else "↑"
        own = metric.split("/", 1)[-1]
        return f"{metric} {arrow}" if own == col.label else f"{col.label} {arrow} ({metric})"


def _has_value(run: RunData, metric: str) -> bool:
    return any((run.metric(s, metric) or {}).get("value") is not None for s in run.systems)


def resolve_metric(run: RunData, column: Column) -> str:
    """The candidate with values in this run (e.g. nltk/METEOR where Java was missing), else the first."""
    return next((m for m in column.candidates if _has_value(run, m)), column.candidates[0])


def _cell(entry: dict[str, Any] | None, metric: str) -> Cell:
    entry = entry or {}
    return Cell(metric, entry.get("value"), entry.get("ci_low"), entry.get("ci_high"))


def comparisons(run: RunData) -> dict[tuple[str, str], dict[str, Any]]:
    """(system, metric) -> the paired test of that system against the reference."""
    return {(c["a"], c["metric"]): c for c in run.scores.get("comparisons") or [] if c.get("b") == run.reference}


def main_table(run: RunData, columns: tuple[Column, ...] = MAIN_COLUMNS) -> MainTable:
    """Every system (reference first) against the reference, plus the human row when present."""
    metrics = [resolve_metric(run, c) for c in columns]
    tests = comparisons(run)
    ref = run.reference
    rows = []
    for system in [ref, *[s for s in run.systems if s != ref]]:
        cells = []
        for metric in metrics:
            cell = _cell(run.metric(system, metric), metric)
            base = (run.metric(ref, metric) or {}).get("value")
            if system != ref and cell.value is not None and base is not None:
                test = tests.get((system, metric))
                cell.delta = test["delta"] if test and test.get("delta") is not None else cell.value - base
                cell.p_value = test.get("p_value") if test else None
                cell.trials = test.get("trials") if test else None
            cells.append(cell)
        rows.append(Row(system, "reference" if system == ref else "system", cells))
    if run.human is not None:
        rows.append(Row("human", "human", [_cell(run.human.get("metrics", {}).get(m), m) for m in metrics]))
    settings = run.scores.get("settings") or {}
    test = settings.get("paired_test") or next(
        (c.get("method") for c in run.scores.get("comparisons") or [] if c.get("method")), "paired test")
    unavailable = dict(run.scores.get("unavailable") or {})
    if run.scores.get("human_unavailable"):
        unavailable["human row"] = str(run.scores["human_unavailable"])
    return MainTable(list(columns), metrics, rows, ref, str(test), float(settings.get("ci_level", 0.95)),
                     unavailable)


# ----------------------------------------------------------------------------- number formatting


def num(value: float | None, digits: int = DIGITS, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    bare = text.lstrip("+-")
    if float(bare) == 0.0:  # no "-0.000"
        return ("+" if sign else "") + bare
    return text


def ci_text(cell: Cell) -> str:
    if cell.ci_low is None or cell.ci_high is None:
        return ""
    return f"[{num(cell.ci_low)}, {num(cell.ci_high)}]"


def delta_text(cell: Cell) -> str:
    return "" if cell.delta is None else num(cell.delta, sign=True)


def test_name(table: MainTable) -> str:
    return f"{table.test}, p < {ALPHA}"


def tested_cells(table: MainTable) -> list[Cell]:
    """The cells with a paired test: the comparisons the main table makes."""
    return [c for row in table.rows if row.kind == "system" for c in row.cells if c.p_value is not None]


def comparisons_note(count: int, what: str = "paired tests") -> str:
    """How many comparisons a table makes, and what that means for its unadjusted p < 0.05."""
    if count <= 1:
        return f"This table makes {count} comparison."
    return (f"This table makes {count} comparisons ({what}): at p < {ALPHA} unadjusted, about {ALPHA * count:.1f} "
            "of them would pass by chance if no system differed; the Holm column adjusts p for all "
            f"{count} (Holm–Bonferroni, family-wise error ≤ {ALPHA}).")


def metric_notes(table: MainTable, images: Any = None) -> list[str]:
    """What TTR and Repetition Rate mean, for the columns the table shows."""
    out = []
    if "div/TTR" in table.metrics:
        out.append(TTR_NOTE.format(images=images if images is not None else "the same"))
    if "div/seq-rep-4" in table.metrics:
        out.append(REPETITION_NOTE)
    return out


def reading_note(table: MainTable, images: Any = None) -> str:
    """How to read the main table (plain text; each renderer escapes it)."""
    level = round(table.ci_level * 100)
    count = len(tested_cells(table))
    return " ".join([
        f"Cells: value, its {level} % bootstrap interval and Δ against the reference system {table.reference}; "
        f"* marks a significant paired test ({test_name(table)}, unadjusted, over {count} comparisons; the paired "
        "tests table gives Holm-adjusted p). A p at the test's floor 1/(trials + 1) is shown as p ≤ that floor. "
        "↑ higher is better, ↓ lower is better. "
        "Set-based measures (TTR, duplicate rate, distinct-n) get no interval and no test: resampling images "
        "duplicates captions, which biases them. The human row scores each reference against the others "
        "(leave-one-out), so it uses one reference fewer than the systems.",
        *metric_notes(table, images)])


def legend(table: MainTable, run: RunData) -> list[tuple[str, str]]:
    """(prefix, implementation) for each implementation the table uses, COCO's tokenizer included."""
    out = []
    for prefix in dict.fromkeys(m.split("/", 1)[0] for m in table.metrics):
        text = IMPLEMENTATIONS.get(prefix, "see captune.metrics")
        tok = (run.scores.get("settings") or {}).get("coco_tokenizer")
        if prefix == "coco" and tok:
            text += f"; tokenizer in this run: {tok}"
        out.append((prefix, text))
    return out


# ----------------------------------------------------------------------------- Markdown


def md_escape(text: Any) -> str:
    """Text safe in a Markdown table cell: no raw HTML, no table breaks, no stray emphasis."""
    import html

    out = html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")
    for ch in "\\`*_[]|":
        out = out.replace(ch, "\\" + ch)
    return out


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def system_label(row: Row) -> str:
    if row.kind == "reference":
        return f"{row.system} (reference)"
    if row.kind == "human":
        return "human (leave-one-out)"
    return row.system


def main_table_markdown(table: MainTable) -> str:
    """Cells: `value [CI low, CI high] Δ*` — Δ against the reference, * where the paired test says p < 0.05."""
    headers = ["System", *[md_escape(table.header(i)) for i in range(len(table.metrics))]]
    rows = []
    for row in table.rows:
        cells = [md_escape(system_label(row))]
        for cell in row.cells:
            parts = [num(cell.value)]
            if ci_text(cell):
                parts.append(ci_text(cell))
            if cell.delta is not None:
                parts.append(f"Δ {delta_text(cell)}" + ("\\*" if cell.significant else ""))
            cells.append(" ".join(parts))
        rows.append(cells)
    return md_table(headers, rows)


PAIRED_HEADERS = ["System", "Metric", "Δ", "p", "p (Holm)", "p < 0.05", "Holm p < 0.05"]


def paired_rows(table: MainTable) -> list[list[str]]:
    """One line per (system, metric) paired test shown in the main table, with Holm's adjustment over them all."""
    cells = [(row, cell) for row in table.rows if row.kind == "system" for cell in row.cells
             if cell.p_value is not None]
    adjusted = holm_texts([(float(c.p_value), c.trials) for _, c in cells])  # type: ignore[arg-type]
    return [[row.system, cell.metric, num(cell.delta, sign=True), format_p(cell.p_value, cell.trials, prefix=False),
             text, "yes" if cell.significant else "no", "yes" if adj < ALPHA else "no"]
            for (row, cell), (adj, text) in zip(cells, adjusted, strict=True)]


VERSUS_METRICS = ("coco/BLEU-4", "coco/METEOR", "coco/CIDEr")
VERSUS_NOTE = ("Each fine-tuned system against the prompt and the sampling baseline with the highest CIDEr, "
               "on the same images; p from the paired test of the main table (two-sided).")


def versus_best(scores: dict[str, Any], metrics: tuple[str, ...] = VERSUS_METRICS) -> list[tuple[str, dict[str, Any]]]:
    """(baseline kind, paired test) for each fine-tuned system against the strongest prompt and sampling
    baselines (scores.json `best_baselines`, picked by CIDEr): the comparison the recipe's claim rests on."""
    best = {name: kind for kind, name in (scores.get("best_baselines") or {}).items() if kind != "criterion"}
    return [(best[c["b"]], c) for c in scores.get("comparisons") or []
            if c.get("b") in best and c.get("metric") in metrics]


def versus_best_table(run: RunData) -> tuple[list[str], list[list[str]]] | None:
    rows = []
    tests = versus_best(run.scores)
    with_p = [c for _, c in tests if c.get("p_value") is not None]
    adjusted = dict(zip(map(id, with_p), holm_texts([(c["p_value"], c.get("trials")) for c in with_p]), strict=True))
    for kind, c in tests:
        holm_text = adjusted[id(c)][1] if id(c) in adjusted else "–"
        rows.append([c["a"], f"{c['b']} (best {kind})", c["metric"], num(c.get("value_a")), num(c.get("value_b")),
                     num(c.get("delta"), sign=True), format_p(c.get("p_value"), c.get("trials"), prefix=False),
                     holm_text])
    if not rows:
        return None
    return ["Fine-tuned", "Baseline", "Metric", "Fine-tuned value", "Baseline value", "Δ", "p", "p (Holm)"], rows


def versus_count(run: RunData) -> int:
    """How many paired tests the fine-tuned-vs-best-baselines table makes."""
    return sum(c.get("p_value") is not None for _, c in versus_best(run.scores))


def sample_spread_table(run: RunData, table: MainTable) -> tuple[list[str], list[list[str]]] | None:
    """Sampling systems: mean ± sd of each main metric over their k independent samples (scores.json
    `sample_spread`), so a reader can tell a real difference from sampling luck."""
    spread = run.scores.get("sample_spread") or {}
    systems = [s for s in run.systems if spread.get(s)] + [s for s in spread if s not in run.systems and spread[s]]
    if not systems:
        return None
    metrics = [m for m in table.metrics if any(m in spread[s] for s in systems)]
    rows = []
    for system in systems:
        cells = [system]
        for m in metrics:
            e = spread[system].get(m)
            cells.append(f"{num(e.get('mean'))} ± {num(e.get('sd'))} (k={e.get('k')})" if e else "–")
        rows.append(cells)
    return ["System", *metrics], rows


def alignment_table(run: RunData) -> tuple[list[str], list[list[str]]] | None:
    """alignment.json as rows of `precision / recall` per category (the synthetic benchmark's truth scores)."""
    data = run.alignment
    if not isinstance(data, dict) or not data:
        return None
    systems = [s for s in run.systems if s in data] + [s for s in data if s not in run.systems]
    preferred = ["pairs", "sizes", "relations", "counts"]
    cats: list[str] = []
    for s in systems:
        for k, v in (data.get(s) or {}).items():
            if isinstance(v, dict) and ("precision" in v or "recall" in v) and k not in cats:
                cats.append(k)
    cats = [c for c in preferred if c in cats] + [c for c in cats if c not in preferred]
    empty = any(isinstance((data.get(s) or {}).get("captions_without_assertions"), int) for s in systems)
    headers = ["System", *[f"{c} P / R" for c in cats], *(["captions asserting nothing"] if empty else [])]
    rows = []
    for s in systems:
        entry = data.get(s) or {}
        if not isinstance(entry, dict):
            continue
        cells = [s]
        for c in cats:
            v = entry.get(c) or {}
            cells.append(f"{num(v.get('precision'))} / {num(v.get('recall'))}")
        if empty:
            n, total = entry.get("captions_without_assertions"), entry.get("images")
            cells.append("–" if n is None else f"{n} of {total}" if total is not None else str(n))
        rows.append(cells)
    return headers, rows
