"""`captune run` end to end on the real Flickr8K layout (6,000 train, 2,000 eval) with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from captune.cli import main


def test_captune_run_end_to_end_on_flickr8k(tmp_path: Path, flickr8k_dir: Path, tiny_model_dirs) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"name: f8k\noutput_dir: {tmp_path}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {flickr8k_dir}\n"
        "train:\n  max_steps: 3\n  batch_size: 8\n  feature_cache: 'off'\n  checkpoint_every: 3\n"
        "  tensorboard: false\ngenerate:\n  max_new_tokens: 5\n  batch_size: 100\n"
        "eval:\n  metrics: [coco, rouge, diversity]\n  bootstrap_samples: 100\n  human_baseline: false\n"
        "  systems:\n    - {name: zero-shot-greedy}\n    - {name: lora-greedy, adapter: true, prompt: a photo of}\n"
    )
    assert main(["run", str(cfg), "--no-progress"]) == 0
    run = tmp_path / "f8k"
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["train_images"] == 6000 and summary["steps"] == 3
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    for name in ("zero-shot-greedy", "lora-greedy"):
        assert len(json.loads((run / "predictions" / f"{name}.json").read_text())) == 2000
    scores = json.loads((run / "scores.json").read_text())
    assert scores["images"] == 2000 and "coco/CIDEr" in scores["systems"]["lora-greedy"]["metrics"]
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    # Rerunning resumes: nothing is retrained or regenerated.
    assert main(["run", str(cfg), "--no-progress"]) == 0
    timings = json.loads((run / "pipeline_timings.json").read_text())
    assert timings["train"] < 5
