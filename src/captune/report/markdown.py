"""report.md: the whole report as GitHub-flavoured Markdown, images referenced relatively (figures/...).

Captions and config values are escaped (`md_escape`), so a caption holding HTML or Markdown syntax
is shown as typed, not rendered.
"""

from __future__ import annotations

from captune.report.gallery import Gallery
from captune.report.load import RunData
from captune.report.setup_info import Section, systems_table
from captune.report.tables import (
    PAIRED_HEADERS,
    VERSUS_NOTE,
    MainTable,
    alignment_table,
    comparisons_note,
    legend,
    main_table_markdown,
    md_escape,
    md_table,
    num,
    paired_rows,
    reading_note,
    sample_spread_table,
    versus_best_table,
    versus_count,
)


def _section_md(section: Section) -> list[str]:
    out = [f"### {md_escape(section.title)}", ""]
    if section.note:
        out += [f"_{md_escape(section.note)}_", ""]
    if section.items:
        out += [md_table(["Item", "Value"], [[md_escape(k), md_escape(v)] for k, v in section.items]), ""]
    return out


def render_markdown(run: RunData, sections: list[Section], table: MainTable, figures: dict[str, str],
                    gallery: Gallery, thumbs: dict[int, str]) -> str:
    """`figures`: file name -> caption (relative to the run dir); `thumbs`: image id -> relative JPEG path."""
    s = run.scores
    out = [f"# captune report — {md_escape(run.name)}", "",
           f"Run directory `{md_escape(run.run_dir.name)}` · scores.json created {md_escape(s.get('created', '?'))} · "
           f"{s.get('images')} evaluated images · reference system **{md_escape(run.reference)}**", ""]

    out += ["## Setup", ""]
    for section in sections:
        out += _section_md(section)
    headers, rows = systems_table(run)
    out += ["### Systems (decoding settings)", "", md_table(headers, [[md_escape(c) for c in r] for r in rows]), ""]

    out += ["## Main results", "", main_table_markdown(table), "", md_escape(reading_note(table, s.get("images"))), "",
            "Metric implementations:", "", *[f"- `{p}/` — {md_escape(t)}" for p, t in legend(table, run)], ""]
    paired = paired_rows(table)
    if paired:
        out += ["### Paired tests against the reference", "",
                md_escape(comparisons_note(len(paired), "every system against the reference, every tested metric")),
                "", md_table(PAIRED_HEADERS, [[md_escape(c) for c in r] for r in paired]), ""]
    versus = versus_best_table(run)
    if versus is not None:
        out += ["### Fine-tuned vs the best prompt and sampling baselines", "",
                md_escape(VERSUS_NOTE + " " + comparisons_note(versus_count(run), "fine-tuned vs best baselines")),
                "",
                md_table([md_escape(h) for h in versus[0]], [[md_escape(c) for c in r] for r in versus[1]]), ""]
    spread = sample_spread_table(run, table)
    if spread is not None:
        out += ["### Spread over samples (sampling systems)", "",
                "Mean ± standard deviation over the system's independent samples; the main table shows sample 1.",
                "", md_table([md_escape(h) for h in spread[0]], [[md_escape(c) for c in r] for r in spread[1]]), ""]
    out += ["### Unavailable metrics", ""]
    if table.unavailable:
        out += [f"- `{md_escape(k)}` — {md_escape(v)}" for k, v in table.unavailable.items()]
    else:
        out.append("None: every requested metric was computed.")
    out.append("")
    align = alignment_table(run)
    if align is not None:
        headers, rows = align
        out += ["### Fine-grained alignment (alignment.json)", "",
                "Precision / recall of what captions assert about the synthetic scenes, per category, "
                "checked against the ground truth (higher is better).", "",
                md_table([md_escape(h) for h in headers], [[md_escape(c) for c in r] for r in rows]), ""]

    out += ["## Figures", ""]
    if figures:
        for name, caption in figures.items():
            out += [f"![{md_escape(caption)}](figures/{name})", "", f"_{md_escape(caption)}_", ""]
    else:
        out += ["No figures: the run has no training log and no scores to plot.", ""]

    out += ["## Qualitative gallery", ""]
    if gallery.metric and gallery.lora:
        out += [f"Per-image score: `{md_escape(gallery.metric)}`. Largest gains and losses of "
                f"**{md_escape(gallery.lora)}** over **{md_escape(gallery.reference)}**, then a seeded random "
                f"sample (seed {gallery.seed}).", ""]
    out += [f"_{md_escape(n)}_" for n in gallery.notes] + ([""] if gallery.notes else [])
    for item in gallery.items:
        title = f"### {md_escape(item.name)} (image {item.image_id}) — {md_escape('; '.join(item.reasons))}"
        out += [title, ""]
        if item.image_id in thumbs:
            out += [f"![image {item.image_id}]({thumbs[item.image_id]})", ""]
        if item.refs:
            out += ["References: " + " · ".join(md_escape(r) for r in item.refs), ""]
        rows = [[md_escape(sys_), md_escape(cap) if cap.strip() else "_(empty caption)_", num(item.scores.get(sys_))]
                for sys_, cap in item.captions.items()]
        out += [md_table(["System", "Caption", md_escape(gallery.metric or "score")], rows), ""]

    out += ["## Per-image scores", "",
            "The sortable, filterable table of every image (references, each system's caption and per-image "
            "score) is in report.html.", ""]

    out += ["## Notes", ""]
    notes = [*(s.get("notes") or []), *run.missing]
    out += [f"- {md_escape(n)}" for n in notes] if notes else ["- none"]
    return "\n".join(out) + "\n"
