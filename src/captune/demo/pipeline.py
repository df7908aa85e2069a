"""`captune demo`: the whole story of the recipe on a CPU, offline, in about two minutes.

synthetic fine-grained benchmark → tiny BLIP-2 base pretrained by captune's own code (fluent but
generic and collapsed, like zero-shot BLIP-2 on a new domain) → LoRA on the recipe's placement →
baseline grid (zero-shot, prompts, sampling, LoRA) → scores + fine-grained alignment → report.
Dataset and base model are cached by their settings; finished stages of the run are reused.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from captune.io import atomic_write_json


@dataclass
class DemoResult:
    run_dir: Path
    report: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    versus: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    from captune.cache import cache_path

    return cache_path("demo")


def scaled_settings(seed: int = 0, scale: float = 1.0, **overrides: Any):
    """Demo settings; `scale` < 1 shrinks the benchmark, `overrides` any other field (CI's fast test)."""
    from captune.demo.recipe import DemoSettings

    s = DemoSettings(seed=seed)
    if scale != 1.0:
        s = replace(s, train_images=max(8, round(s.train_images * scale)),
                    val_images=max(4, round(s.val_images * scale)), test_images=max(4, round(s.test_images * scale)))
    return replace(s, **overrides) if overrides else s


def alignment_for_run(run_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Fine-grained truth of each system's captions: precision/recall of asserted attributes."""
    from captune.data import load_dataset
    from captune.demo.judge import alignment_scores
    from captune.demo.synth import load_truth

    truth = load_truth(data_dir)
    names = {r.image_id: r.name for r in load_dataset(data_dir).records}
    scores = json.loads((run_dir / "scores.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for system in scores.get("systems_order", scores["systems"]):
        rows = json.loads((run_dir / "predictions" / f"{system}.json").read_text(encoding="utf-8"))
        out[system] = alignment_scores({names[r["image_id"]]: r["caption"] for r in rows}, truth)
    atomic_write_json(run_dir / "alignment.json", out)
    return out


def run_demo(out_dir: str | Path = "runs", name: str = "demo", fresh: bool = False, seed: int = 0,
             scale: float = 1.0, lora_steps: int | None = None, cache_dir: str | Path | None = None,
             progress: bool = True, report: bool = True, say=print, overrides: Sequence[str] = (),
             **settings_overrides: Any) -> DemoResult:
    """demo.yaml's run (`overrides`: `--set`-style keys of it; `lora_steps`: train.max_steps) on the cached
    benchmark and base (`settings_overrides`: DemoSettings fields)."""
    from captune.demo.base import base_dir as base_dir_for
    from captune.demo.base import build_base, ensure_synth, feature_dir, synth_dir, torch_threads
    from captune.demo.recipe import demo_run_config
    from captune.overlap import run_side_by_side, start_human_baseline

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    settings = scaled_settings(seed, scale, **settings_overrides)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    run_dir = Path(out_dir) / name
    overrides = [*overrides, *([f"train.max_steps={lora_steps}"] if lora_steps is not None else [])]
    data_dir, base = synth_dir(settings, cache), base_dir_for(settings, cache)
    cfg = demo_run_config(data_dir, base, out_dir, name=name, seed=seed, feature_dir=feature_dir(cache),
                          overrides=overrides)
    if fresh:
        for path in (data_dir, base, feature_dir(cache), run_dir):
            shutil.rmtree(path, ignore_errors=True)
    with torch_threads(1):
        t = time.perf_counter()
        say("[1/5] synthetic fine-grained benchmark ...")
        ensure_synth(settings, cache)
        timings["synth"] = time.perf_counter() - t
        human = start_human_baseline(cfg)
        t = time.perf_counter()
        say("[2/5] tiny BLIP-2 base (pretrained by captune to play the frozen, generic captioner) ...")
        build_base(settings, cache)
        timings["base"] = time.perf_counter() - t
        say(f"[3/5] LoRA fine-tuning ({cfg.lora.preset}, r={cfg.lora.r}) and [4/5] the baseline grid "
            f"({len(cfg.eval.systems or [])} systems) ...")
        t = time.perf_counter()
        if human is not None:
            human.join()  # normally long done; the grid scores the human baseline itself if it failed
        timings["wait_human"] = time.perf_counter() - t
        t = time.perf_counter()
        result = run_side_by_side(cfg, progress=progress, report=False)
        timings.update({f"pipeline/{k}": v for k, v in result.timings.items()})
        timings["train+grid"] = time.perf_counter() - t
        t = time.perf_counter()
        alignment_for_run(run_dir, data_dir)
        timings["alignment"] = time.perf_counter() - t
        report_path = None
        if report:
            say("[5/5] report ...")
            t = time.perf_counter()
            from captune.report import build_report

            paths = build_report(run_dir)
            report_path = getattr(paths, "html", None)
            timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    atomic_write_json(run_dir / "demo.json", {"settings": settings.to_dict(), "timings": timings})
    return DemoResult(run_dir, report_path, timings, summary_rows(run_dir), versus_lines(run_dir))


SUMMARY = [("coco/BLEU-4", "BLEU-4"), ("coco/METEOR", "METEOR"), ("coco/CIDEr", "CIDEr"),
           ("div/Duplicate Rate", "dup↓"), ("div/seq-rep-4", "rep↓")]


def summary_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The demo's printed table: key n-gram, collapse and alignment numbers per system."""
    scores = json.loads((run_dir / "scores.json").read_text(encoding="utf-8"))
    align_path = run_dir / "alignment.json"
    align = json.loads(align_path.read_text(encoding="utf-8")) if align_path.is_file() else {}
    rows = []
    for system in scores.get("systems_order", scores["systems"]):
        metrics = scores["systems"][system]["metrics"]
        row: dict[str, Any] = {"system": system}
        for key, label in SUMMARY:
            row[label] = (metrics.get(key) or {}).get("value")
        pairs = (align.get(system) or {}).get("pairs") or {}
        row["pair prec"] = pairs.get("precision")
        row["pair rec"] = pairs.get("recall")
        rows.append(row)
    return rows


def versus_lines(run_dir: Path) -> list[str]:
    """One line per (LoRA system, best prompt / best sampling baseline): Δ and paired p per metric."""
    from captune.metrics.stats import format_p
    from captune.report.tables import versus_best

    scores = json.loads((run_dir / "scores.json").read_text(encoding="utf-8"))
    lines: dict[tuple[str, str, str], list[str]] = {}
    for kind, c in versus_best(scores):
        if c.get("delta") is not None:
            lines.setdefault((c["a"], kind, c["b"]), []).append(
                f"{c['metric'].split('/')[-1]} {c['delta']:+.3f} ({format_p(c['p_value'], c.get('trials'))})")
    return [f"{a} vs best {kind} ({b}): " + ", ".join(parts) for (a, kind, b), parts in lines.items()]
