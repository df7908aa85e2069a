"""`captune demo` end to end at a reduced scale (the full-size targets are measured, not tested)."""

from __future__ import annotations

import json
from pathlib import Path

from captune.demo.pipeline import run_demo
from captune.demo.recipe import demo_systems
from captune.metrics.java import find_java


def test_demo_runs_end_to_end_at_reduced_scale(tmp_path: Path, monkeypatch, capsys) -> None:
    result = run_demo(out_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", scale=0.02, lora_steps=20,
                      progress=False, say=lambda s: None, vision_steps=20, lm_steps=20)
    run = result.run_dir
    for name in ("config.yaml", "scores.json", "alignment.json", "report.md", "report.html", "results.md",
                 "demo.json", "adapter/adapter_model.safetensors", "train/log.jsonl"):
        assert (run / name).is_file(), name
    scores = json.loads((run / "scores.json").read_text())
    assert scores["systems_order"] == [s["name"] for s in demo_systems()]
    alignment = json.loads((run / "alignment.json").read_text())
    assert set(alignment) == set(scores["systems"])
    assert {"pairs", "sizes", "relations", "counts"} <= set(alignment["lora-greedy"])
    assert [r["system"] for r in result.rows] == scores["systems_order"]
    best = scores["best_baselines"]
    assert set(best) == {"criterion", "prompt", "sampling"}
    assert len(result.versus) == 4  # 2 LoRA systems x (best prompt, best sampling)
    tested = 3 if find_java().available else 2  # BLEU-4, CIDEr, and METEOR where Java is found
    assert all(line.count("(p ") == tested for line in result.versus), result.versus
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["parameters"]["trainable_share"] < 0.05
    # A rerun, typed as a user would, reuses the cached dataset, base model and finished stages.
    from captune.cli import main
    from captune.demo import pipeline

    full = pipeline.run_demo
    monkeypatch.setattr(pipeline, "run_demo", lambda **kw: full(**kw, lora_steps=20, vision_steps=20, lm_steps=20))
    assert main(["demo", "--scale", "0.02", "--out", str(tmp_path / "runs"), "--cache-dir",
                 str(tmp_path / "cache"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert all(s["name"] in printed for s in demo_systems()) and "vs best prompt" in printed
    assert f"report: {result.report}" in captured.err.replace("\n", "")
    again = json.loads((run / "demo.json").read_text())["timings"]
    assert again["base"] < result.timings["base"]
    assert "pipeline/train" in again and again["pipeline/train"] < result.timings["pipeline/train"]


def test_demo_cli_rejects_bad_scale(capsys) -> None:
    from captune.cli import main

    assert main(["demo", "--scale", "0"]) == 1
    assert "--scale" in capsys.readouterr().err
