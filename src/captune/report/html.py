"""report.html: one self-contained page (figures and thumbnails inlined as data URIs, CSS and JavaScript
inline, no network), so the file can be mailed or moved on its own.

Safety: every caption, file name and config value goes through `html.escape`; the per-image data is
JSON in a `<script type="application/json">` block with `<`, `>` and `&` written as `\\u003c`-style
escapes, so no caption can close the block; the page's Content-Security-Policy allows only data:
images and the one inline script whose hash it names, so even an injected script would not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

from captune.metrics.stats import format_p
from captune.report.gallery import Gallery
from captune.report.load import RunData
from captune.report.setup_info import Section, systems_table
from captune.report.tables import (
    PAIRED_HEADERS,
    VERSUS_NOTE,
    MainTable,
    alignment_table,
    ci_text,
    comparisons_note,
    delta_text,
    num,
    paired_rows,
    sample_spread_table,
    test_name,
    versus_best_table,
    versus_count,
)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def script_json(obj: Any) -> str:
    """JSON that cannot end a <script> element or open an HTML comment inside it."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


CSS = """
:root { --fg: #1d1d1f; --muted: #666; --line: #d9d9de; --bg-alt: #f6f6f8; --good: #11703a; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1500px; padding: 16px 20px 60px; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 2px solid var(--line); }
h3 { margin: 22px 0 8px; font-size: 16px; }
.meta, .note, .muted { color: var(--muted); }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: var(--bg-alt); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.setup { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 0 28px; }
.setup td:first-child { color: var(--muted); white-space: nowrap; }
#systems td:first-child { white-space: nowrap; font-weight: 600; }
.scroll { overflow-x: auto; }
#main-table td.num .v { font-weight: 600; display: block; }
#main-table { font-size: 12.5px; }
#main-table td, #main-table th { padding: 3px 4px; }
#main-table tbody th { white-space: nowrap; font-weight: 600; position: sticky; left: 0; background: #fff; }
#main-table thead th:first-child { position: sticky; left: 0; }
#main-table thead th { vertical-align: bottom; white-space: normal; font-size: 12px; }
#main-table .nw { white-space: nowrap; }
#main-table .impl { display: block; font-size: 11px; font-weight: 400; color: var(--muted); }
#main-table .ci, #main-table .d { display: block; font-size: 10.5px; color: var(--muted); }
#main-table .d.better { color: var(--good); } #main-table .d.worse { color: var(--bad); }
#main-table tr.reference td, #main-table tr.reference th { background: #f7f7f7; }
#main-table tr.human td, #main-table tr.human th { background: #f3f1fa; font-style: italic; }
.sig { color: var(--fg); font-weight: 700; }
figure { margin: 10px 0 24px; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; display: grid;
        grid-template-columns: 170px 1fr; gap: 10px; }
.card img { width: 160px; height: auto; image-rendering: pixelated; border: 1px solid var(--line); }
.card .why { font-size: 12px; color: var(--muted); }
.card ol { margin: 4px 0; padding-left: 18px; }
.card table { width: 100%; font-size: 13px; grid-column: 1 / -1; }
.card td:first-child { white-space: nowrap; }
.card tr.lora td { background: #fff4ea; } .card tr.reference td { background: #f4f4f4; }
#per-image-filter { width: 360px; padding: 5px 8px; font-size: 14px; }
#per-image th { cursor: pointer; user-select: none; position: sticky; top: 0; }
#per-image th[aria-sort=ascending]::after { content: " ▲"; }
#per-image th[aria-sort=descending]::after { content: " ▼"; }
#per-image td.refs { white-space: pre-line; color: var(--muted); font-size: 12px; min-width: 280px; }
#per-image td.caption { min-width: 200px; } #per-image td.num { width: 1%; }
#per-image th { font-size: 12px; white-space: normal; min-width: 64px; }
.pi-wrap { max-height: 720px; overflow: auto; border: 1px solid var(--line); }
code { background: var(--bg-alt); padding: 0 3px; border-radius: 3px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("per-image-data").textContent);
  var table = document.getElementById("per-image");
  var filter = document.getElementById("per-image-filter");
  var count = document.getElementById("per-image-count");
  var head = table.tHead.rows[0];
  var body = table.tBodies[0];
  var texts = data.rows.map(function (r) { return r.join("\\n").toLowerCase(); });
  var sortCol = -1, sortDir = 1;
  function show(v, numeric) {
    if (v === null || v === undefined) { return "\\u2013"; }
    if (numeric === "int") { return String(v); }
    return numeric ? v.toFixed(3) : String(v);
  }
  function compare(a, b, numeric) {
    if (a === null) { return b === null ? 0 : 1; }
    if (b === null) { return -1; }
    if (numeric) { return (a - b) * sortDir; }
    return String(a).localeCompare(String(b)) * sortDir;
  }
  function render() {
    var q = filter.value.trim().toLowerCase();
    var idx = [];
    for (var i = 0; i < data.rows.length; i++) { if (!q || texts[i].indexOf(q) >= 0) { idx.push(i); } }
    if (sortCol >= 0) {
      var numeric = data.columns[sortCol].numeric;
      idx.sort(function (x, y) {
        var c = compare(data.rows[x][sortCol], data.rows[y][sortCol], numeric);
        return c !== 0 ? c : x - y;
      });
    }
    var frag = document.createDocumentFragment();
    idx.forEach(function (i) {
      var tr = document.createElement("tr");
      data.rows[i].forEach(function (v, c) {
        var td = document.createElement("td");
        var col = data.columns[c];
        td.textContent = show(v, col.numeric);
        td.className = col.numeric ? "num" : (col.kind || "");
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    while (body.firstChild) { body.removeChild(body.firstChild); }
    body.appendChild(frag);
    count.textContent = idx.length + " of " + data.rows.length + " images";
  }
  data.columns.forEach(function (col, c) {
    var th = document.createElement("th");
    th.textContent = col.label;
    th.title = "click to sort";
    if (col.numeric) { th.className = "num"; }
    th.addEventListener("click", function () {
      sortDir = sortCol === c ? -sortDir : (col.numeric === true ? -1 : 1);
      sortCol = c;
      Array.prototype.forEach.call(head.cells, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      render();
    });
    head.appendChild(th);
  });
  filter.addEventListener("input", render);
  render();
})();
"""


def _section_html(section: Section) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in section.items)
    note = f'<p class="note">{esc(section.note)}</p>' if section.note else ""
    return f"<div><h3>{esc(section.title)}</h3>{note}" + (f"<table>{rows}</table>" if rows else "") + "</div>"


def _simple_table(headers: list[str], rows: list[list[str]], num_from: int | None = None, attrs: str = "") -> str:
    def cls(i: int) -> str:
        return ' class="num"' if num_from is not None and i >= num_from else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _header_html(table: MainTable, i: int) -> str:
    """Two lines: the implementation prefix small on top, the measure and its better-direction arrow below."""
    col, metric = table.columns[i], table.metrics[i]
    impl, _, own = metric.rpartition("/")
    arrow = "↓" if col.lower_better else "↑"
    top = f"{impl}/" if own == col.label else metric
    words = esc(col.label).rsplit(" ", 1)  # the last word stays with its arrow; "BLEU-1" never breaks
    tail = f'<span class="nw">{words[-1]}&nbsp;{arrow}</span>'
    return f'<span class="impl">{esc(top)}</span>' + (f"{words[0]} {tail}" if len(words) == 2 else tail)


def main_table_html(table: MainTable) -> str:
    level = round(table.ci_level * 100)
    heads = "".join(f'<th class="num" scope="col">{_header_html(table, i)}</th>' for i in range(len(table.metrics)))
    rows = []
    for row in table.rows:
        cells = []
        for col, cell in zip(table.columns, row.cells, strict=True):
            parts = [f'<span class="v">{esc(num(cell.value))}</span>']
            if ci_text(cell):  # compact "low–high" so that 14 metric columns fit a 1280 px window
                parts.append(f'<span class="ci" title="{level} % interval">{esc(num(cell.ci_low))}–'
                             f"{esc(num(cell.ci_high))}</span>")
            if cell.delta is not None:
                good = cell.delta < 0 if col.lower_better else cell.delta > 0
                tone = "" if cell.delta == 0 else (" better" if good else " worse")
                mark = ""
                if cell.p_value is not None:
                    p = format_p(cell.p_value, cell.trials)
                    mark = f' <span class="sig" title="{esc(p)}">*</span>' if cell.significant else ""
                    parts.append(f'<span class="d{tone}" title="{esc(p)}">Δ {esc(delta_text(cell))}{mark}</span>')
                else:
                    parts.append(f'<span class="d{tone}">Δ {esc(delta_text(cell))}</span>')
            cells.append(f'<td class="num" data-metric="{esc(cell.metric)}">{"".join(parts)}</td>')
        sub = {"reference": "reference", "human": "leave-one-out"}.get(row.kind, "")
        name = "human" if row.kind == "human" else row.system
        label = esc(name) + (f'<span class="impl">{sub}</span>' if sub else "")
        rows.append(f'<tr class="{esc(row.kind)}"><th scope="row">{label}</th>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="main-table"><thead><tr><th>System</th>{heads}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def per_image_data(run: RunData, metric: str | None) -> dict[str, Any]:
    """Columns and rows of the per-image table (every evaluated image)."""
    columns: list[dict[str, Any]] = [{"label": "image id", "numeric": "int"}, {"label": "file", "numeric": False},
                                     {"label": "references", "numeric": False, "kind": "refs"}]
    systems = [s for s in run.systems if s in run.predictions]
    for s in systems:
        columns.append({"label": f"{s} caption", "numeric": False, "kind": "caption"})
        if metric:
            columns.append({"label": f"{s} {metric}", "numeric": True})
    rows = []
    for k, image_id in enumerate(run.image_ids):
        info = run.images.get(image_id)
        row: list[Any] = [image_id, info.name if info else "", "\n".join(info.refs) if info else ""]
        for s in systems:
            row.append(run.predictions[s].get(image_id, ""))
            if metric:
                values = run.per_image(s, metric)
                row.append(values[k] if values is not None else None)
        rows.append(row)
    return {"columns": columns, "rows": rows}


def _gallery_html(gallery: Gallery) -> str:
    cards = []
    for item in gallery.items:
        img = (f'<img src="{data_uri(item.thumbnail, "image/jpeg")}" alt="{esc(item.name)}">' if item.thumbnail
               else '<div class="muted">(no image)</div>')
        refs = "".join(f"<li>{esc(r)}</li>" for r in item.refs) or '<li class="muted">references unavailable</li>'
        delta = (f"<br>Δ {esc(gallery.metric)} ({esc(gallery.lora)} − {esc(gallery.reference)}): "
                 f"{esc(num(item.delta, sign=True))}" if item.delta is not None else "")
        rows = []
        for s, cap in item.captions.items():
            kind = "reference" if s == gallery.reference else ("lora" if s == gallery.lora else "")
            text = esc(cap) if cap.strip() else '<span class="muted">(empty caption)</span>'
            rows.append(f'<tr class="{kind}"><td>{esc(s)}</td><td class="caption">{text}</td>'
                        f'<td class="num">{esc(num(item.scores.get(s)))}</td></tr>')
        score_head = esc(gallery.metric or "score")
        cards.append(
            f'<div class="card" data-image-id="{esc(item.image_id)}">{img}<div><b>{esc(item.name)}</b> '
            f'<span class="muted">(image {esc(item.image_id)})</span><div class="why">{esc("; ".join(item.reasons))}'
            f'{delta}</div><ol>{refs}</ol></div><table><thead><tr><th>System</th><th>Caption</th>'
            f'<th class="num">{score_head}</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in gallery.notes)
    return f'{notes}<div class="gallery" id="gallery">{"".join(cards)}</div>'


def render_html(run: RunData, sections: list[Section], table: MainTable, figures: dict[str, tuple[str, bytes]],
                gallery: Gallery, legend: list[tuple[str, str]], how_to_read: str) -> str:
    """`figures`: file name -> (caption, PNG bytes); `legend`: (prefix, implementation)."""
    s = run.scores
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>captune report — {esc(run.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>captune report — {esc(run.name)}</h1>",
        f'<p class="meta">Run directory <code>{esc(run.run_dir.name)}</code> · scores.json created '
        f"{esc(s.get('created', '?'))} · {esc(s.get('images'))} evaluated images · reference system "
        f"<b>{esc(run.reference)}</b></p>",
        '<nav><a href="#setup">Setup</a><a href="#results">Main results</a><a href="#figures">Figures</a>'
        '<a href="#gallery-section">Gallery</a><a href="#per-image-section">Per-image table</a>'
        '<a href="#notes">Notes</a></nav>',
        '<h2 id="setup">Setup</h2><div class="setup">', *[_section_html(x) for x in sections], "</div>",
    ]
    headers, rows = systems_table(run)
    parts += ["<h3>Systems (decoding settings)</h3>",
              '<div class="scroll">' + _simple_table(headers, rows, attrs=' id="systems"') + "</div>"]

    parts += ['<h2 id="results">Main results</h2>', main_table_html(table), f'<p class="note">{esc(how_to_read)}</p>',
              "<p>Metric implementations:</p><ul>",
              *[f"<li><code>{esc(p)}/</code> — {esc(t)}</li>" for p, t in legend], "</ul>"]
    paired = paired_rows(table)
    if paired:
        note = comparisons_note(len(paired), "every system against the reference, every tested metric")
        parts += [f"<details><summary>Paired tests against the reference ({esc(test_name(table))}; "
                  f"{len(paired)} comparisons)</summary>", f'<p class="note">{esc(note)}</p>',
                  _simple_table(PAIRED_HEADERS, paired, num_from=2, attrs=' id="paired-tests"'), "</details>"]
    versus = versus_best_table(run)
    if versus is not None:
        parts += ['<h3 id="versus-best">Fine-tuned vs the best prompt and sampling baselines</h3>',
                  f'<p class="note">{esc(VERSUS_NOTE)} '
                  f'{esc(comparisons_note(versus_count(run), "fine-tuned vs best baselines"))}</p>',
                  '<div class="scroll">' + _simple_table(*versus, num_from=3, attrs=' id="versus-best-table"')
                  + "</div>"]
    spread = sample_spread_table(run, table)
    if spread is not None:
        parts += ["<h3>Spread over samples (sampling systems)</h3>",
                  '<p class="note">Mean ± standard deviation over the system\'s independent samples; the main table '
                  "shows sample 1.</p>", '<div class="scroll">' + _simple_table(*spread, num_from=1) + "</div>"]
    parts.append("<h3>Unavailable metrics</h3>")
    if table.unavailable:
        parts += ['<ul id="unavailable">',
                  *[f"<li><code>{esc(k)}</code> — {esc(v)}</li>" for k, v in table.unavailable.items()], "</ul>"]
    else:
        parts.append("<p>None: every requested metric was computed.</p>")
    align = alignment_table(run)
    if align is not None:
        parts += ['<h3 id="alignment">Fine-grained alignment (alignment.json)</h3>',
                  '<p class="note">Precision / recall of what captions assert about the synthetic scenes, per '
                  "category, checked against the ground truth (higher is better).</p>",
                  _simple_table(*align, num_from=1, attrs=' id="alignment-table"')]

    parts.append('<h2 id="figures">Figures</h2>')
    if figures:
        for name, (caption, png) in figures.items():
            parts.append(f'<figure id="fig-{esc(name.rsplit(".", 1)[0])}"><img src="{data_uri(png, "image/png")}" '
                         f'alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>')
    else:
        parts.append("<p>No figures: the run has no training log and no scores to plot.</p>")

    parts.append('<h2 id="gallery-section">Qualitative gallery</h2>')
    if gallery.metric and gallery.lora:
        parts.append(f"<p>Per-image score <code>{esc(gallery.metric)}</code>: largest gains and losses of "
                     f"<b>{esc(gallery.lora)}</b> over <b>{esc(gallery.reference)}</b>, then a seeded random sample "
                     f"(seed {esc(gallery.seed)}).</p>")
    parts.append(_gallery_html(gallery))

    parts += ['<h2 id="per-image-section">Per-image scores</h2>',
              '<p><input id="per-image-filter" type="search" placeholder="filter: any text in the row" '
              'aria-label="filter rows"> <span id="per-image-count" class="muted"></span> '
              '<span class="muted">· click a header to sort</span></p>',
              '<div class="pi-wrap"><table id="per-image"><thead><tr></tr></thead><tbody></tbody></table></div>',
              '<script type="application/json" id="per-image-data">'
              f"{script_json(per_image_data(run, gallery.metric))}</script>"]

    notes = [*(s.get("notes") or []), *run.missing]
    items = [f"<li>{esc(n)}</li>" for n in notes] or ["<li>none</li>"]
    parts += ['<h2 id="notes">Notes</h2><ul>', *items, "</ul>",
              f"<script>{SCRIPT}</script></body></html>"]
    return "\n".join(parts) + "\n"
