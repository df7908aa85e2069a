"""The report stage: every section from a real finished tiny run, numbers equal to scores.json, safe HTML
(checked in headless Chromium when it is installed), LaTeX escaping, and the CLI from a shell."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from captune.report import build_report, parse_formats
from captune.report.latex import latex_escape
from captune.report.load import RunData
from captune.report.tables import main_table, num

INJECT = "<script>alert(1)</script>"
BREAKOUT = "</script><!-- <script>alert(2)</script>"
EVIL_SYSTEM = 'beam<b>&"x"_1%'
EVIL_NAME = "<img src=x onerror=alert(3)>"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dirs) -> Path:
    """A real run directory: synthetic data, a short LoRA training with validation, the grid, alignment.json.

    The tiny model is untrained, so every system's captions come out empty and every n-gram metric
    would be 0 — a number-matching test would then prove nothing. So after the grid has generated,
    two systems' prediction files are replaced by designed captions (a collapsed zero-shot system;
    a LoRA system mostly right, sometimes wrong, once looping) and the grid is rerun, which reuses
    the predictions and scores them: scores.json is still the grid's own output. Java is hidden while
    scoring (CAPTUNE_JAVA=none; METEOR's JVM takes ~25 s to start here), which also exercises the
    "unavailable" listing. WordNet is used where the machine has it: METEOR is then NLTK's, else it is missing
    (`test_report_without_wordnet` forces that case on a machine with WordNet).
    """
    from captune.config import load_config
    from captune.data import load_dataset_from_config
    from captune.demo.judge import alignment_scores
    from captune.demo.synth import generate_synth, load_truth
    from captune.grid.run import run_grid
    from captune.train.loop import train

    root = tmp_path_factory.mktemp("report")
    generate_synth(root / "synth", scale=0.01, size=32)
    cfg_path = root / "run.yaml"
    cfg_path.write_text(
        f"name: rep\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {root / 'synth'}\n  val_from_train: 6\ntrain:\n  max_steps: 12\n  batch_size: 8\n  lr: 0.01\n"
        "  warmup_steps: 2\n  tensorboard: false\n  validate_every: 6\n  val_max_images: 6\n"
        "generate:\n  max_new_tokens: 6\neval:\n  bootstrap_samples: 200\n  systems:\n"
        "    - {name: zero-shot-greedy}\n    - {name: zero-shot-beam3, num_beams: 3}\n"
        "    - {name: lora-greedy, adapter: true}\n    - {name: nucleus, do_sample: true, top_p: 0.9, samples: 2}\n"
    )
    cfg = load_config(cfg_path)
    train(cfg, progress=False)
    run_grid(cfg, progress=False, score=False)
    records = load_dataset_from_config(cfg.data).select("eval")
    pred = cfg.run_dir / "predictions"

    def write(system: str, captions: list[str]) -> None:
        rows = [{"image_id": r.image_id, "caption": c} for r, c in zip(records, captions, strict=True)]
        (pred / f"{system}.json").write_text(json.dumps(rows))

    write("zero-shot-greedy", ["a photo of some shapes" if k % 5 else "a grey picture" for k in range(len(records))])
    lora = [r.refs[0] for r in records]
    for k in range(0, len(records), 4):
        lora[k] = records[(k + 7) % len(records)].refs[1]
    lora[1] = "a red circle and a red circle and a red circle and a red circle"
    write("lora-greedy", lora)
    with _hidden(CAPTUNE_JAVA="none"):
        run_grid(cfg, progress=False)
    truth = load_truth(root / "synth" / "synth_objects.json")
    alignment = {}
    for system in ("zero-shot-greedy", "zero-shot-beam3", "lora-greedy"):
        caps = {r["image_id"]: r["caption"] for r in json.loads((pred / f"{system}.json").read_text())}
        alignment[system] = alignment_scores({r.name: caps[r.image_id] for r in records}, truth)
    (cfg.run_dir / "alignment.json").write_text(json.dumps(alignment))
    return cfg.run_dir


@contextlib.contextmanager
def _hidden(**values: str) -> Iterator[None]:
    """Set captune's lookup variables (CAPTUNE_JAVA=none, CAPTUNE_WORDNET_DIR=none) for a module-scope fixture."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _meteor_column() -> str:
    """Java is hidden while scoring, so METEOR is NLTK's where WordNet is found and COCO's (empty) where not."""
    from captune.metrics.nltk_wordnet import load_wordnet

    return "nltk/METEOR" if load_wordnet()[0] is not None else "coco/METEOR"


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "adapter", "best", "report.*", "figures"))
    return dest


@pytest.fixture(scope="module")
def report(finished_run: Path):
    return build_report(finished_run, ("md", "html", "latex"))


@pytest.fixture(scope="module")
def injected_run(finished_run: Path, tmp_path_factory) -> Path:
    """A copy whose captions, one system name and the run name try to inject HTML and break out of <script>."""
    run = _copy_run(finished_run, tmp_path_factory.mktemp("inject") / "rep")
    pred = run / "predictions"
    rows = json.loads((pred / "zero-shot-beam3.json").read_text())
    for k, row in enumerate(rows):
        row["caption"] = BREAKOUT if k == 1 else INJECT
    (pred / f"{EVIL_SYSTEM}.json").write_text(json.dumps(rows))
    (pred / "zero-shot-beam3.json").unlink()
    scores = json.loads((run / "scores.json").read_text())
    rename = {"zero-shot-beam3": EVIL_SYSTEM}
    scores["systems"] = {rename.get(k, k): v for k, v in scores["systems"].items()}
    scores["systems_order"] = [rename.get(k, k) for k in scores["systems_order"]]
    scores["system_settings"] = {rename.get(k, k): v for k, v in scores["system_settings"].items()}
    for c in scores["comparisons"]:
        c["a"] = rename.get(c["a"], c["a"])
    (run / "scores.json").write_text(json.dumps(scores))
    cfg = (run / "config.yaml").read_text().replace("name: rep\n", f"name: '{EVIL_NAME}'\n", 1)
    (run / "config.yaml").write_text(cfg)
    build_report(run, ("md", "html", "latex"))
    return run


# ----------------------------------------------------------------------------- report.md against scores.json

CELL = re.compile(r"^(–|\d+\.\d+)(?: \[(\d+\.\d+), (\d+\.\d+)\])?(?: Δ ([+-]\d+\.\d+)(\\\*)?)?$")
TOL = 5e-4 + 1e-9


def _table_after(text: str, start: str) -> list[list[str]]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return [rows[0], *rows[2:]]


def _header_metric(header: str) -> str:
    m = re.search(r"\(([^()]+/[^()]+)\)$", header)
    return m.group(1) if m else header.rsplit(" ", 1)[0]


def _close(shown: str | None, value: float | None) -> bool:
    if value is None:
        return shown in (None, "–")
    return shown is not None and abs(float(shown) - value) <= TOL


def _p_shown(shown: str, comparison: dict) -> bool:
    """A p cell: "≤ 1/(trials+1)" exactly where p sits at that floor, else the value to 4 decimals."""
    floor = 1 / (comparison["trials"] + 1)
    if comparison["p_value"] <= floor * (1 + 1e-9):
        return shown.startswith("≤ ") and floor <= float(shown[2:]) <= 1.1 * floor
    return abs(float(shown) - comparison["p_value"]) <= 5e-5


def test_report_has_every_section_and_the_numbers_of_scores_json(finished_run: Path, report) -> None:
    md = report.markdown.read_text()
    scores = json.loads((finished_run / "scores.json").read_text())
    for heading in ("## Setup", "### Model", "### LoRA", "### Data", "### Training", "### Hardware and versions",
                    "### Wall time per stage", "### Systems (decoding settings)", "## Main results",
                    "### Paired tests against the reference", "### Spread over samples (sampling systems)",
                    "### Unavailable metrics",
                    "### Fine-grained alignment (alignment.json)", "## Figures", "## Qualitative gallery",
                    "## Per-image scores", "## Notes"):
        assert f"\n{heading}\n" in md, heading
    assert "| adapter selected on | 6 images held out of split 'train' (seed 42); none evaluated |" in md

    table = _table_after(md, "| System | coco/BLEU-1")
    metrics = [_header_metric(h) for h in table[0][1:]]
    assert metrics == ["coco/BLEU-1", "coco/BLEU-2", "coco/BLEU-3", "coco/BLEU-4", "rouge/ROUGE-1", "rouge/ROUGE-2",
                       "rouge/ROUGE-L", _meteor_column(), "coco/CIDEr", "div/TTR", "div/seq-rep-4",
                       "div/Duplicate Rate", "div/distinct-1", "div/distinct-2"]  # no Java while scoring
    assert "Repetition Rate ↓ (div/seq-rep-4)" in table[0] and "div/Duplicate Rate ↓" in table[0]
    ref = scores["reference_system"]
    tests = {(c["a"], c["metric"]): c for c in scores["comparisons"] if c["b"] == ref}
    seen = []
    significant = 0
    for row in table[1:]:
        name = row[0].replace(" (reference)", "").replace("\\", "")
        seen.append(name)
        if name == "human (leave-one-out)":
            source = scores["human"]["systems"]["human"]["metrics"]
        else:
            source = scores["systems"][name]["metrics"]
        for metric, cell in zip(metrics, row[1:], strict=True):
            m = CELL.match(cell)
            assert m, (name, metric, cell)
            entry = source.get(metric)
            if entry is None:  # METEOR with neither Java nor WordNet: listed as unavailable, shown as "–"
                assert cell == "–" and metric in scores["unavailable"], (name, metric, cell)
                continue
            assert _close(m.group(1), entry["value"]), (name, metric, cell, entry)
            assert _close(m.group(2), entry["ci_low"]) and _close(m.group(3), entry["ci_high"]), (name, metric, cell)
            test = tests.get((name, metric))
            if name in (ref, "human (leave-one-out)"):
                assert m.group(4) is None
                continue
            base = scores["systems"][ref]["metrics"][metric]["value"]
            assert _close(m.group(4), entry["value"] - base), (name, metric, cell)
            assert bool(m.group(5)) == bool(test and test["p_value"] < 0.05), (name, metric, cell, test)
            significant += bool(m.group(5))
    assert seen == [ref, "zero-shot-beam3", "lora-greedy", "nucleus", "human (leave-one-out)"]
    assert significant >= 5  # the designed LoRA captions beat the collapsed reference

    paired = _table_after(md, "| System | Metric | Δ | p |")
    assert paired[0] == ["System", "Metric", "Δ", "p", "p (Holm)", "p < 0.05", "Holm p < 0.05"]
    assert f"This table makes {len(paired) - 1} comparisons" in md
    for system, metric, delta, p, _, sig, _ in paired[1:]:
        c = tests[(system, metric)]
        assert _close(delta, c["delta"]) and _p_shown(p, c) and (sig == "yes") == (c["p_value"] < 0.05)
    assert "approximate randomisation" in md and "p &lt; 0.05" in md

    for metric, why in scores["unavailable"].items():
        assert metric.replace("_", "\\_") in md and "unavailable" in why
    assert "`coco/` — pycocoevalcap" in md and "`div/` — captune.metrics.diversity" in md

    spread = _table_after(md, "| System | coco/BLEU-1 | coco/BLEU-2")
    assert [r[0] for r in spread[1:]] == ["nucleus"]
    for metric, cell in zip(spread[0][1:], spread[1][1:], strict=True):
        mean, sd, k = re.fullmatch(r"(\d+\.\d+) ± (\d+\.\d+) \(k=(\d+)\)", cell).groups()
        want = scores["sample_spread"]["nucleus"][metric.replace("\\", "")]
        assert _close(mean, want["mean"]) and _close(sd, want["sd"]) and int(k) == want["k"] == 2

    assert scores["best_baselines"] == {"criterion": "coco/CIDEr", "sampling": "nucleus"}
    versus = _table_after(md, "| Fine-tuned | Baseline | Metric")
    assert "\n### Fine-tuned vs the best prompt and sampling baselines\n" in md
    shown = {(r[0], r[2].replace("\\", "")): r for r in versus[1:]}
    for c in scores["comparisons"]:
        if c["b"] == "nucleus" and c["metric"] in ("coco/BLEU-4", "coco/CIDEr"):
            row = shown[(c["a"], c["metric"])]
            assert row[1] == "nucleus (best sampling)" and _close(row[5], c["delta"])
            assert _p_shown(row[6], c)
    assert {a for a, _ in shown} == {"lora-greedy"}

    alignment = json.loads((finished_run / "alignment.json").read_text())
    align = _table_after(md, "| System | pairs P / R")
    assert [r[0] for r in align[1:]] == ["zero-shot-greedy", "zero-shot-beam3", "lora-greedy"]
    for row in align[1:]:
        assert row[5] == f"{alignment[row[0]]['captions_without_assertions']} of 20"
        for cat, cell in zip(("pairs", "sizes", "relations", "counts"), row[1:5], strict=True):
            p, r = cell.split(" / ")
            assert _close(p, alignment[row[0]][cat]["precision"]) and _close(r, alignment[row[0]][cat]["recall"])

    summary = json.loads((finished_run / "train" / "summary.json").read_text())
    params = summary["parameters"]
    assert f"{params['trainable']:,} of {params['total']:,}" in md
    assert f"| final training loss | {summary['final_loss']:.4f} |" in md
    for lib in ("torch", "transformers", "peft", "accelerate", "captune"):
        assert f"| {lib} |" in md
    assert "| grid: total |" in md and "| training (whole stage) |" in md


def test_report_without_wordnet(finished_run: Path, tmp_path: Path) -> None:
    """Neither Java nor WordNet (forced by captune's variables): the grid rescoring the same predictions lists
    both METEORs as unavailable, and the report shows an empty coco/METEOR column instead of NLTK's."""
    from captune.config import load_config
    from captune.grid.run import run_grid

    shutil.copytree(finished_run, tmp_path / "runs" / finished_run.name,
                    ignore=shutil.ignore_patterns("report.*", "figures", "scores.json"))
    cfg = load_config(finished_run.parents[1] / "run.yaml", [f"output_dir={tmp_path / 'runs'}"])
    with _hidden(CAPTUNE_JAVA="none", CAPTUNE_WORDNET_DIR="none"):
        run_grid(cfg, progress=False)
    scores = json.loads((cfg.run_dir / "scores.json").read_text())
    assert "WordNet hidden" in scores["unavailable"]["nltk/METEOR"]
    assert "Java hidden" in scores["unavailable"]["coco/METEOR"]
    md = build_report(cfg.run_dir, ("md",)).markdown.read_text()
    table = _table_after(md, "| System | coco/BLEU-1")
    column = [_header_metric(h) for h in table[0]].index("coco/METEOR")
    assert all(row[column] == "–" for row in table[1:]) and "nltk/METEOR" not in table[0]
    assert "`coco/METEOR` — METEOR unavailable: Java hidden" in md


def test_figures_and_gallery_files(finished_run: Path, report) -> None:
    md = report.markdown.read_text()
    names = sorted(p.name for p in report.figures)
    assert names == ["loss.png", "metrics.png", "mode_collapse.png"]
    for path in report.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
        assert f"(figures/{path.name})" in md
    assert report.thumbnails and all(p.read_bytes()[:2] == b"\xff\xd8" for p in report.thumbnails)
    for path in report.thumbnails:
        assert f"](figures/gallery/{path.name})" in md
    assert "largest gain of lora-greedy" in md and "largest loss of lora-greedy" in md
    assert "random sample (seed 0)" in md


def test_gallery_picks_the_largest_gains_and_losses(finished_run: Path) -> None:
    from captune.report.gallery import build_gallery
    from captune.report.load import load_run

    run = load_run(finished_run)
    gallery = build_gallery(run, sample=0, extremes=2)
    ref = run.per_image("zero-shot-greedy", "coco/CIDEr")
    lora = run.per_image("lora-greedy", "coco/CIDEr")
    deltas = sorted(((a - b, i) for i, a, b in zip(run.image_ids, lora, ref, strict=True)), reverse=True)
    want = [i for _, i in deltas[:2]] + [i for d, i in reversed(deltas) if d < 0][:2]
    assert [item.image_id for item in gallery.items] == want
    assert gallery.items[0].captions["lora-greedy"] == run.predictions["lora-greedy"][want[0]]
    assert gallery.items[0].refs and gallery.items[0].thumbnail[:2] == b"\xff\xd8"


def test_html_is_self_contained_and_matches_the_table(finished_run: Path, report) -> None:
    page = report.html.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//|file:)""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 3 and "data:image/jpeg;base64," in page
    assert 'id="main-table"' in page and 'id="gallery"' in page and 'id="per-image-data"' in page
    data = json.loads(re.search(r'id="per-image-data">(.*?)</script>', page, re.S).group(1))
    scores = json.loads((finished_run / "scores.json").read_text())
    assert [r[0] for r in data["rows"]] == scores["image_ids"]
    col = [c["label"] for c in data["columns"]].index("lora-greedy coco/CIDEr")
    assert [r[col] for r in data["rows"]] == scores["systems"]["lora-greedy"]["per_image"]["coco/CIDEr"]
    cider = scores["systems"]["lora-greedy"]["metrics"]["coco/CIDEr"]
    assert f">{num(cider['value'])}<" in page and f">{num(cider['ci_low'])}–{num(cider['ci_high'])}<" in page


def test_latex_tabular(finished_run: Path, report, injected_run: Path) -> None:
    tex = report.latex.read_text()
    assert tex.count(r"\begin{tabular}") == 1 and tex.rstrip().endswith(r"\end{tabular}")
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(body) == 1 + 4 + 1  # header, four systems, human
    assert all(line.count("&") == 14 for line in body)
    assert r"$^{*}$" in tex and r"div/Duplicate Rate $\downarrow$" in tex
    evil = (injected_run / "report.tex").read_text()
    assert latex_escape(EVIL_SYSTEM) == r'beam\textless{}b\textgreater{}\&"x"\_1\%'
    assert latex_escape(EVIL_SYSTEM) in evil and EVIL_SYSTEM not in evil
    assert latex_escape(r"a\b~^{}#$") == r"a\textbackslash{}b\textasciitilde{}\textasciicircum{}\{\}\#\$"


def test_injected_captions_and_names_stay_text(injected_run: Path) -> None:
    page = (injected_run / "report.html").read_text()
    assert INJECT not in page and "alert(2)</script>" not in page and EVIL_NAME not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the gallery shows it as text
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the JSON block and the page's own
    data = json.loads(re.search(r'id="per-image-data">(.*?)</script>', page, re.S).group(1))
    assert data["rows"][1][3 + 2] == BREAKOUT and data["rows"][0][3 + 2] == INJECT
    assert html_escape(EVIL_SYSTEM) in page and html_escape(EVIL_NAME) in page
    md = (injected_run / "report.md").read_text()
    assert INJECT not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# ----------------------------------------------------------------------------- smaller units


def _scores_doc(metrics: dict[str, float | None]) -> dict:
    def entry(v: float | None) -> dict:
        return {"value": v, "ci_low": None if v is None else v - 0.01, "ci_high": None if v is None else v + 0.01}

    systems = {name: {"metrics": {m: entry(None if v is None else v + k) for m, v in metrics.items()}}
               for k, name in enumerate(["base", "tuned"])}
    comparisons = [{"a": "tuned", "b": "base", "metric": m, "delta": 1.0, "p_value": 0.2, "method": "x"}
                   for m in metrics]
    return {"systems": systems, "comparisons": comparisons, "settings": {"paired_test": "my test"}}


def test_main_table_prefers_coco_meteor_and_falls_back_to_nltk(tmp_path: Path) -> None:
    run = RunData(tmp_path, _scores_doc({"coco/METEOR": 0.2, "nltk/METEOR": 0.3, "coco/CIDEr": 0.5}))
    table = main_table(run)
    assert table.metrics[table.metrics.index("coco/METEOR")] == "coco/METEOR" and table.test == "my test"
    tuned = table.rows[1].cells[table.metrics.index("coco/CIDEr")]
    assert tuned.value == 1.5 and tuned.delta == 1.0 and not tuned.significant
    run = RunData(tmp_path, _scores_doc({"coco/METEOR": None, "nltk/METEOR": 0.3}))
    assert "nltk/METEOR" in main_table(run).metrics
    assert num(-0.0001) == "0.000" and num(-0.0001, sign=True) == "+0.000" and num(None) == "–"


def test_formats_are_validated() -> None:
    from captune.errors import UserError

    assert parse_formats("html, md,latex") == ("md", "html", "latex") and parse_formats(["tex"]) == ("latex",)
    with pytest.raises(UserError, match="unknown format 'pdf'"):
        parse_formats("md,pdf")


# ----------------------------------------------------------------------------- CLI from a shell


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "captune", "report", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_on_a_zero_shot_only_run(finished_run: Path, tmp_path: Path) -> None:
    """No training, no adapter, no alignment: the report says so instead of failing."""
    run = _copy_run(finished_run, tmp_path / "zs")
    shutil.rmtree(run / "train")
    (run / "alignment.json").unlink()
    scores = json.loads((run / "scores.json").read_text())
    for key in ("systems", "system_settings"):
        scores[key].pop("lora-greedy")
    scores["systems_order"].remove("lora-greedy")
    scores["comparisons"] = [c for c in scores["comparisons"] if c["a"] != "lora-greedy"]
    (run / "scores.json").write_text(json.dumps(scores))
    res = _cli(str(run), "--format", "md,html,latex")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "report.md" in res.stderr and "report.html" in res.stderr and "report.tex" in res.stderr
    md = (run / "report.md").read_text()
    assert "no training in this run (train/summary.json absent)" in md
    assert "no LoRA system in this grid" in md and "Fine-grained alignment" not in md
    assert not (run / "figures" / "loss.png").exists() and (run / "figures" / "metrics.png").is_file()


def test_cli_missing_scores_is_one_line(tmp_path: Path, capsys) -> None:
    from captune.cli import main

    res = _cli(str(tmp_path))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "scores.json" in lines[0] and "captune eval" in lines[0], res.stderr
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "scores.json").write_text("{not json")
    assert main(["report", str(tmp_path), "--format", "md,pdf"]) == 1
    assert "unknown format 'pdf'" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "damaged JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------- headless Chromium


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): browser checks skipped; "
                "`apt-get install chromium` enables them")


def _browse(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    exe = _chromium()
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr", "--v=0", "--window-size=1280,2000", *mode, page.resolve().as_uri()]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    return res


def test_browser_renders_report_without_console_errors(report, tmp_path: Path) -> None:
    shot = report.run_dir / "figures" / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    _browse(report.html, tmp_path, f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = _browse(report.html, tmp_path, "--dump-dom").stdout
    assert 'id="main-table"' in dom and 'id="gallery"' in dom and dom.count('class="card"') >= 6
    body = re.search(r'<table id="per-image">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert body.count("<tr>") == 20  # the inline script ran (the CSP hash matches) and built every row
    assert "20 of 20 images" in dom


def test_browser_keeps_injected_script_as_text(injected_run: Path, tmp_path: Path) -> None:
    dom = _browse(injected_run / "report.html", tmp_path, "--dump-dom").stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # gallery and per-image table, as text
    assert "alert(1)</script>" not in dom and "alert(2)</script>" not in dom and "beam<b>" not in dom
    assert len(re.findall(r"<script\b", dom)) == 2
    body = re.search(r'<table id="per-image">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert body.count("<tr>") == 20 and "&lt;/script&gt;&lt;!-- &lt;script&gt;alert(2)" in body


PROBE = """<script>
window.addEventListener("load", function () {
  var out = {}, tb = document.querySelector("#per-image tbody"), f = document.getElementById("per-image-filter");
  f.value = "SYNTH_00061"; f.dispatchEvent(new Event("input")); out.filtered = tb.rows.length;
  f.value = ""; f.dispatchEvent(new Event("input"));
  var ths = Array.prototype.slice.call(document.querySelectorAll("#per-image thead th"));
  var lora = ths.filter(function (th) { return th.textContent === "lora-greedy coco/CIDEr"; })[0];
  lora.click(); out.best = tb.rows[0].cells[0].textContent;
  lora.click(); out.worst = tb.rows[0].cells[0].textContent;
  ths[0].click(); out.first = tb.rows[0].cells[0].textContent;
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def test_browser_sorts_and_filters_the_per_image_table(finished_run: Path, report, tmp_path: Path) -> None:
    page = report.html.read_text()
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)  # let the probe run
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _browse(probe, tmp_path, "--dump-dom").stdout
    out = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    scores = json.loads((finished_run / "scores.json").read_text())
    per = scores["systems"]["lora-greedy"]["per_image"]["coco/CIDEr"]
    ids = scores["image_ids"]
    assert out["filtered"] == 1
    assert int(out["best"]) == ids[per.index(max(per))] and int(out["worst"]) == ids[per.index(min(per))]
    assert int(out["first"]) == min(ids)
