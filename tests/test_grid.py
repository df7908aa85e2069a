"""The evaluation grid: every file written, equal to independent runs, resumable, same images for all."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from captune.config import load_config
from captune.generate.captioner import Captioner
from captune.grid.run import run_grid
from captune.model.adapters import load_adapter
from captune.model.load import load_blip2
from captune.train.loop import train

SYSTEMS = """
eval:
  metrics: [coco, rouge, diversity]
  bootstrap_samples: 200
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: zero-shot-beam3, num_beams: 3}
    - {name: prompt-photo, prompt: "a photo of"}
    - {name: nucleus, do_sample: true, top_p: 0.9, samples: 2}
    - {name: lora-greedy, adapter: true}
    - {name: lora-beam3, adapter: true, num_beams: 3, no_repeat_ngram_size: 2}
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dirs) -> Path:
    """A synthetic benchmark and a short LoRA run on it (the grid's inputs)."""
    from captune.demo.synth import generate_synth

    root = tmp_path_factory.mktemp("grid")
    generate_synth(root / "synth", scale=0.01, size=32)
    cfg_path = root / "run.yaml"
    cfg_path.write_text(
        f"name: base\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {root / 'synth'}\ntrain:\n  max_steps: 6\n  batch_size: 8\n  lr: 0.003\n"
        "  tensorboard: false\ngenerate:\n  max_new_tokens: 8\n" + SYSTEMS
    )
    train(load_config(cfg_path), progress=False)
    return cfg_path


def _cfg(cfg_path: Path, name: str, *extra: str):
    adapter = cfg_path.parent / "runs" / "base" / "adapter"
    return load_config(cfg_path, [f"name={name}", *extra]), adapter


def test_grid_writes_every_file_and_scores(trained_run: Path) -> None:
    cfg, adapter = _cfg(trained_run, "full")
    result = run_grid(cfg, adapter_dir=adapter, progress=False)
    run = cfg.run_dir
    names = ["zero-shot-greedy", "zero-shot-beam3", "prompt-photo", "nucleus", "lora-greedy", "lora-beam3"]
    assert result.systems == names and result.generated == names
    for name in [*names, "nucleus.sample-1"]:
        rows = json.loads((run / "predictions" / f"{name}.json").read_text())
        assert len(rows) == 20 and all(isinstance(r["image_id"], int) and isinstance(r["caption"], str)
                                       for r in rows)
    scores = json.loads((run / "scores.json").read_text())
    assert set(scores["systems"]) == set(names) and scores["reference_system"] == "zero-shot-greedy"
    assert {c["a"] for c in scores["comparisons"]} == set(names[1:])
    # the adapter systems are also tested against the strongest prompt and sampling baselines
    assert scores["best_baselines"] == {"criterion": "coco/CIDEr", "prompt": "prompt-photo", "sampling": "nucleus"}
    for a in ("lora-greedy", "lora-beam3"):
        for b in ("prompt-photo", "nucleus"):
            tests = {c["metric"]: c for c in scores["comparisons"] if c["a"] == a and c["b"] == b}
            assert {"coco/BLEU-4", "coco/METEOR" if "coco/METEOR" not in scores["unavailable"] else "coco/CIDEr",
                    "coco/CIDEr"} <= set(tests)
            assert 0 < tests["coco/CIDEr"]["p_value"] <= 1
    assert not [c for c in scores["comparisons"] if c["b"] == "nucleus" and not c["a"].startswith("lora")]
    timings = scores["timings"]  # METEOR ran while captions were generated (prefetched per batch)
    assert "coco/METEOR" in scores["unavailable"] or timings.get("meteor thread: segments scored", 0) > 0
    cider = scores["systems"]["lora-greedy"]["metrics"]["coco/CIDEr"]
    assert cider["ci_low"] <= cider["value"] <= cider["ci_high"]
    assert "coco/CIDEr" in scores["sample_spread"]["nucleus"]
    assert (run / "results.md").read_text().count("\n") == len(names) + 2
    assert json.loads((run / "results.json").read_text())["rows"][0]["system"] == "zero-shot-greedy"
    assert (run / "config.yaml").is_file() and (run / "grid_timings.json").is_file()


def test_grid_equals_independent_runs(trained_run: Path) -> None:
    cfg, adapter = _cfg(trained_run, "same")
    run_grid(cfg, adapter_dir=adapter, progress=False, score=False)
    from captune.data import load_dataset_from_config

    records = load_dataset_from_config(cfg.data).select("eval")
    loaded = load_blip2(cfg.model)
    captioner = Captioner(load_adapter(loaded.model, adapter), loaded.processor, loaded.family)
    paths = [r.path for r in records]
    for system in cfg.eval.systems:
        if system.decode.do_sample:  # sample k draws with seed + 1000 k, batch by batch as the grid does
            for k, name in enumerate([system.name] + [f"{system.name}.sample-{j}" for j in range(1, system.samples)]):
                settings = replace(system.decode, seed=system.decode.seed + 1000 * k)
                alone = captioner.caption_paths(paths, settings, system.adapter, batch_size=cfg.generate.batch_size)
                grid = json.loads((cfg.run_dir / "predictions" / f"{name}.json").read_text())
                assert [c[0] for c in alone] == [r["caption"] for r in grid], name
            continue
        alone = captioner.caption_paths(paths, system.decode, system.adapter, batch_size=7)
        grid = json.loads((cfg.run_dir / "predictions" / f"{system.name}.json").read_text())
        assert [c[0] for c in alone] == [r["caption"] for r in grid], system.name
    # the greedy and sampled base systems shared their generate calls
    timings = json.loads((cfg.run_dir / "grid_timings.json").read_text())
    assert "generate/zero-shot-greedy+nucleus+nucleus.sample-1" in timings


def _grid_child(cfg, adapter, fault: str) -> None:
    os.environ["CAPTUNE_FAULT"] = fault
    run_grid(cfg, adapter_dir=adapter, progress=False, score=False)


def test_killed_grid_reruns_only_unfinished_systems(trained_run: Path) -> None:
    cfg, adapter = _cfg(trained_run, "killed")
    proc = multiprocessing.get_context("fork").Process(target=_grid_child, args=(cfg, adapter, "kill@grid-system:2"))
    proc.start()
    proc.join(300)
    assert proc.exitcode == -9
    pred = cfg.run_dir / "predictions"
    done = {p.stem for p in pred.glob("*.json")}
    assert done == {"zero-shot-greedy", "zero-shot-beam3"}
    before = {p.name: p.stat().st_mtime_ns for p in pred.glob("*.json")}
    result = run_grid(cfg, adapter_dir=adapter, progress=False, score=False)
    assert result.reused == ["zero-shot-greedy", "zero-shot-beam3"]
    assert result.generated == ["prompt-photo", "nucleus", "lora-greedy", "lora-beam3"]
    assert all((pred / n).stat().st_mtime_ns == t for n, t in before.items())


def test_unreadable_image_is_left_out_of_every_system(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "synth"
    shutil.copytree(trained_run.parent / "synth", data)
    test_images = (data / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    (data / "Flicker8k_Dataset" / test_images[0]).write_bytes(b"not an image")
    cfg, adapter = _cfg(trained_run, "broken", f"data.path={data}")
    result = run_grid(cfg, adapter_dir=adapter, progress=False, score=False)
    assert len(result.skipped_images) == 1 and test_images[0] in result.skipped_images[0]
    for name in result.systems:
        assert len(json.loads((cfg.run_dir / "predictions" / f"{name}.json").read_text())) == 19


def test_eval_cli_from_a_shell(trained_run: Path) -> None:
    adapter = trained_run.parent / "runs" / "base" / "adapter"
    res = subprocess.run([sys.executable, "-m", "captune", "eval", str(trained_run), "--set", "name=cli",
                          "--adapter", str(adapter), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "lora-greedy" in res.stdout and (trained_run.parent / "runs" / "cli" / "scores.json").is_file()


def test_eval_cli_on_flickr8k(tmp_path: Path, flickr8k_dir: Path, tiny_model_dirs) -> None:
    from captune.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"output_dir: {tmp_path}\nname: f8k\nmodel:\n  name_or_path: {tiny_model_dirs['t5']}\n"
                   f"data:\n  path: {flickr8k_dir}\n  max_images: 12\ngenerate:\n  max_new_tokens: 6\n"
                   "eval:\n  metrics: [rouge, diversity]\n  bootstrap_samples: 100\n  human_baseline: false\n"
                   "  systems:\n    - {name: zero-shot-greedy}\n    - {name: prompt-photo, prompt: a photo of}\n")
    assert main(["eval", str(cfg), "--no-progress"]) == 0
    scores = json.loads((tmp_path / "f8k" / "scores.json").read_text())
    assert scores["images"] == 24  # 12 val + 12 test


def test_stages_take_no_overlap_switch() -> None:
    """Overlap lives in captune.overlap: the stages keep plain signatures, the model layer holds no lock."""
    import inspect

    import captune.model.load
    from captune.grid.run import run_grid
    from captune.pipeline import run_pipeline

    assert list(inspect.signature(run_pipeline).parameters) == ["cfg", "progress", "dataset", "report"]
    assert not {"select", "start_scorer"} & set(inspect.signature(run_grid).parameters)
    assert not hasattr(captune.model.load, "BUILD_LOCK")


def test_captioning_while_training_equals_one_after_the_other(trained_run: Path) -> None:
    """The base systems captioned in a thread while LoRA trains: same adapter, same captions (sampled ones too)."""
    from captune.overlap import run_side_by_side
    from captune.pipeline import run_pipeline

    results = {}
    for name, run in (("sequential", run_pipeline), ("overlapped", run_side_by_side)):
        cfg = load_config(trained_run, [f"name={name}", "eval.metrics=[coco,diversity]"])
        results[name] = run(cfg, progress=False, report=False)
    seq, par = (results[n].run_dir for n in ("sequential", "overlapped"))
    early = {name for k in results["overlapped"].timings if k.startswith("early/generate/")
             for name in k.split("/", 2)[2].split("+")}
    assert early == {"zero-shot-greedy", "zero-shot-beam3", "prompt-photo", "nucleus", "nucleus.sample-1"}  # no adapter
    assert not any(k.startswith("early/") for k in results["sequential"].timings)
    weights = "adapter/adapter_model.safetensors"
    assert (seq / weights).read_bytes() == (par / weights).read_bytes()
    files = sorted(p.name for p in (seq / "predictions").iterdir())
    assert files and files == sorted(p.name for p in (par / "predictions").iterdir())
    for f in files:
        assert (seq / "predictions" / f).read_bytes() == (par / "predictions" / f).read_bytes(), f
    scores = [json.loads((run / "scores.json").read_text())["systems"] for run in (seq, par)]
    from captune.metrics.java import find_java

    assert "nucleus" in scores[1] and "coco/CIDEr" in scores[1]["nucleus"]["metrics"]
    assert ("coco/METEOR" in scores[1]["nucleus"]["metrics"]) == find_java().available
    assert [{n: {k: m["value"] for k, m in r["metrics"].items()} for n, r in s.items()} for s in scores] == \
        [{n: {k: m["value"] for k, m in r["metrics"].items()} for n, r in scores[0].items()}] * 2
