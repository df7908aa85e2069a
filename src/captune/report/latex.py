"""The main table as a LaTeX `tabular` to \\input into a paper, from the same `MainTable` data as Markdown/HTML."""

from __future__ import annotations

from typing import Any

from captune.report.tables import (
    MainTable,
    ci_text,
    delta_text,
    metric_notes,
    num,
    system_label,
    test_name,
    tested_cells,
)

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
}


def latex_escape(text: Any) -> str:
    """Escape the characters TeX treats specially, so names and labels print verbatim."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def main_table_latex(table: MainTable, caption_note: str = "") -> str:
    """A `tabular` (no float, no packages beyond LaTeX itself) to \\input into a paper."""
    arrows = [r"$\downarrow$" if c.lower_better else r"$\uparrow$" for c in table.columns]
    lines = [
        f"% captune main table: every system against the reference ({latex_escape(table.reference)});",
        f"% cells: value [{round(table.ci_level * 100)}% CI] (delta vs reference); "
        f"* = significant ({latex_escape(test_name(table))}).",
    ]
    lines.append(f"% * is unadjusted over the table's {len(tested_cells(table))} comparisons; report.md gives "
                 "Holm-adjusted p.")
    lines += ["% " + latex_escape(note) for note in metric_notes(table)]
    if caption_note:
        lines.append("% " + latex_escape(caption_note))
    lines.append(r"\begin{tabular}{l" + "r" * len(table.metrics) + "}")
    lines.append(r"\hline")
    heads = []
    for col, metric, arrow in zip(table.columns, table.metrics, arrows, strict=True):
        own = metric.split("/", 1)[-1]
        name = metric if own == col.label else f"{col.label} ({metric})"
        heads.append(f"{latex_escape(name)} {arrow}")
    lines.append("System & " + " & ".join(heads) + r" \\")
    lines.append(r"\hline")
    for row in table.rows:
        cells = []
        for cell in row.cells:
            text = num(cell.value)
            if ci_text(cell):
                text += r" {\scriptsize " + ci_text(cell) + "}"
            if cell.delta is not None:
                text += r" {\scriptsize (" + delta_text(cell).replace("-", "$-$") + ")}"
                if cell.significant:
                    text += r"$^{*}$"
            cells.append(text)
        if row.kind == "human":
            lines.append(r"\hline")
        lines.append(latex_escape(system_label(row)) + " & " + " & ".join(cells) + r" \\")
    lines.append(r"\hline")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"
