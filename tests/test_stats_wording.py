"""Honest wording of statistics: p at the permutation floor, Holm over a table's comparisons, and what TTR and
Repetition Rate mean, in the report, the CLI and the demo's summary lines."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from captune.metrics.stats import at_floor, format_p, holm, mean_statistic, p_floor, paired_test


def test_a_p_at_the_floor_is_printed_as_a_bound() -> None:
    a = mean_statistic("x", np.arange(200, dtype=float))
    b = mean_statistic("x", np.arange(200, dtype=float) - 50)
    result = paired_test(a, b, trials=1000)
    assert result.p_value == p_floor(1000) and at_floor(result.p_value, result.trials)
    assert format_p(result.p_value, result.trials) == "p ≤ 0.001"
    assert format_p(result.p_value, result.trials, prefix=False) == "≤ 0.001"
    assert format_p(1 / 101, 100) == "p ≤ 0.01" and format_p(1 / 10001, 10000) == "p ≤ 0.0001"
    assert format_p(2 / 1001, 1000) == "p = 0.0020"  # one trial as extreme: a number, not a bound
    assert format_p(0.25) == "p = 0.2500" and format_p(None) == "–" and format_p(float("nan")) == "–"
    assert format_p(12 / 1001, bound=True) == "p ≤ 0.012"  # rounded up, so the bound stays true


def _holm_rejects(p: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure as Holm (1979) states it: reject in ascending order while p_(k) <= alpha/(m-k)."""
    m = len(p)
    rejected = set()
    for k, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        if p[i] > alpha / (m - k):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_agrees_with_the_step_down_procedure() -> None:
    rng = random.Random(0)
    for _ in range(200):
        p = [rng.choice([rng.random(), rng.random() / 50, 1 / 1001]) for _ in range(rng.randint(1, 9))]
        adjusted = holm(p)
        assert all(1.0 >= a >= q for a, q in zip(adjusted, p, strict=True))
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == _holm_rejects(p, alpha), (p, alpha)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []


def _run(tmp_path, comparisons: list[dict], metrics: dict[str, float]):
    import json

    from captune.report.load import load_run

    systems = {name: {"metrics": {m: {"value": v + k, "ci_low": None, "ci_high": None} for m, v in metrics.items()}}
               for k, name in enumerate(["base", "a", "b"])}
    scores = {"systems": systems, "systems_order": list(systems), "comparisons": comparisons, "images": 37,
              "reference_system": "base", "settings": {"paired_test": "approximate randomisation", "ci_level": 0.95}}
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    (run / "scores.json").write_text(json.dumps(scores))
    return load_run(run)


def test_report_tables_count_comparisons_and_offer_holm(tmp_path) -> None:
    from captune.report.latex import main_table_latex
    from captune.report.tables import PAIRED_HEADERS, comparisons_note, main_table, paired_rows, reading_note

    metrics = {"coco/BLEU-4": 0.2, "coco/CIDEr": 0.5, "div/TTR": 0.3, "div/seq-rep-4": 0.01}
    ps = {("a", "coco/BLEU-4"): 1 / 1001, ("a", "coco/CIDEr"): 0.02, ("b", "coco/BLEU-4"): 0.3,
          ("b", "coco/CIDEr"): 1 / 1001}
    comps = [{"a": a, "b": "base", "metric": m, "delta": 1.0, "p_value": p, "trials": 1000, "method": "x"}
             for (a, m), p in ps.items()]
    run = _run(tmp_path, comps, metrics)
    table = main_table(run)
    rows = paired_rows(table)
    assert len(PAIRED_HEADERS) == len(rows[0]) and len(rows) == 4
    by = {(r[0], r[1]): r for r in rows}
    assert by[("a", "coco/BLEU-4")][3:5] == ["≤ 0.001", "≤ 0.004"]  # 4 comparisons x the floor, still a bound
    assert by[("a", "coco/CIDEr")][3:5] == ["0.0200", "0.0400"]  # third smallest: (4 - 2) x 0.02
    assert by[("b", "coco/BLEU-4")][3:] == ["0.3000", "0.3000", "no", "no"]
    assert by[("a", "coco/CIDEr")][5:] == ["yes", "yes"]
    note = reading_note(table, 37)
    assert "over 4 comparisons" in note and "Holm" in note
    assert "falls as the number of captions grows" in note and "37 here" in note
    assert "Repetition Rate is div/seq-rep-4" in note and "4-gram" in note
    assert "makes 4 comparisons" in comparisons_note(4) and "Holm" in comparisons_note(4)
    tex = main_table_latex(table)
    assert "4 comparisons" in tex and "Repetition Rate is div/seq-rep-4" in tex


def test_report_files_word_p_and_metrics(tmp_path) -> None:
    """report.md and report.html show the floor as "≤ 0.001", the comparison count and the Holm column."""
    from captune.report import build_report

    metrics = {"coco/BLEU-4": 0.2, "div/TTR": 0.3, "div/seq-rep-4": 0.01}
    comps = [{"a": a, "b": "base", "metric": m, "delta": 1.0, "p_value": 1 / 1001, "trials": 1000, "method": "x"}
             for a, m in itertools.product(["a", "b"], ["coco/BLEU-4"])]
    run = _run(tmp_path, comps, metrics)
    paths = build_report(run.run_dir, ("md", "html"))
    md = paths.markdown.read_text()
    assert "| a | coco/BLEU-4 | +1.000 | ≤ 0.001 | ≤ 0.002 | yes | yes |" in md
    assert "This table makes 2 comparisons" in md and "falls as the number of captions grows" in md
    assert "0.0010" not in md
    page = paths.html.read_text()
    assert 'title="p ≤ 0.001"' in page and "2 comparisons" in page and "<th class=\"num\">p (Holm)</th>" in page


def test_cli_score_prints_the_bound_and_holm(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from captune.cli import app

    refs = {i: [f"a red circle number {i}", f"one red circle {i}"] for i in range(40)}
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    good = [{"image_id": i, "caption": f"a red circle number {i}"} for i in range(40)]
    bad = [{"image_id": i, "caption": "a blue square"} for i in range(40)]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "good.json").write_text(json.dumps(good))
    result = CliRunner().invoke(app, ["score", "--pred", str(tmp_path / "bad.json"), "--pred",
                                      str(tmp_path / "good.json"), "--refs", str(tmp_path / "refs.json"),
                                      "--metrics", "coco,diversity", "--bootstrap", "50"],
                                env={"CAPTUNE_JAVA": "none", "COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "≤ 0.001" in result.output and "p (Holm)" in result.output and "comparisons" in result.output
    assert "0.0010" not in result.output
    assert "falls as the number of captions grows" in result.output and "(40 here)" in result.output
    assert "Repetition Rate is div/seq-rep-4" in result.output
