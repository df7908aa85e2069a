"""Sharded evaluation: 2 processes over gloo caption exactly what one process does; process 0 alone writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from captune.config import load_config
from captune.grid import run as grid_run
from captune.grid.run import run_grid
from captune.grid.shard import Shard, merge
from captune.train.loop import train

# greedy, beam, a sampling system with two draws, and an adapter system; batches of 3 over 20 images:
# 7 batches (the last one of 2), 4 for process 0 and 3 for process 1. Every caption is 8 tokens long (the
# tiny random model would otherwise stop at once), so that sampled captions differ from seed to seed.
CONFIG = """
generate:
  max_new_tokens: 8
  min_new_tokens: 8
  batch_size: 3
eval:
  metrics: [coco, diversity]
  bootstrap_samples: 100
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: zero-shot-beam3, num_beams: 3}
    - {name: nucleus, do_sample: true, top_p: 0.9, temperature: 1.5, samples: 2}
    - {name: lora-greedy, adapter: true}
"""


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dirs) -> tuple[Path, Path]:
    """A short LoRA run on a synthetic benchmark, evaluated in one process: (config, run dir)."""
    from captune.demo.synth import generate_synth

    root = tmp_path_factory.mktemp("shard")
    generate_synth(root / "synth", scale=0.01, size=32)
    cfg_path = root / "run.yaml"
    cfg_path.write_text(
        f"name: one\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {root / 'synth'}\ntrain:\n  max_steps: 6\n  batch_size: 8\n  lr: 0.003\n"
        "  tensorboard: false\n" + CONFIG
    )
    cfg = load_config(cfg_path)
    train(cfg, progress=False)
    run_grid(cfg, progress=False)
    return cfg_path, cfg.run_dir


def _captions(run_dir: Path) -> dict[str, list[str]]:
    return {p.stem: [r["caption"] for r in json.loads(p.read_text())] for p in (run_dir / "predictions").glob("*.json")}


def test_shard_takes_every_nth_batch_and_merge_restores_image_order() -> None:
    assert Shard(0, 2).starts(20, 3) == [0, 6, 12, 18] and Shard(1, 2).starts(20, 3) == [3, 9, 15]
    assert Shard().starts(7, 3) == [0, 3, 6] and Shard(2, 3).starts(4, 2) == []  # fewer batches than processes
    parts = [{"a": {0: ["x", "y"], 4: ["z"]}}, {"a": {2: ["u", "v"]}}]
    assert merge(parts) == {"a": ["x", "y", "u", "v", "z"]}


class _SecondProcess(Shard):
    """Process 1 of 2 without a process group: what it would hand to process 0 is kept."""

    handed: Any = None

    def gather(self, obj: Any) -> None:
        _SecondProcess.handed = [*(_SecondProcess.handed or []), obj]


def test_second_process_captions_its_batches_and_writes_nothing(one_process, tmp_path: Path, monkeypatch) -> None:
    cfg_path, one = one_process
    monkeypatch.setattr(grid_run, "current_shard", lambda: _SecondProcess(1, 2))
    adapter = one / "adapter"
    cfg = load_config(cfg_path, ["name=rank1", f"output_dir={tmp_path}"])
    result = run_grid(cfg, adapter_dir=adapter, progress=False)
    assert result.scores == {} and result.generated == ["zero-shot-greedy", "zero-shot-beam3", "nucleus", "lora-greedy"]
    assert [p.name for p in cfg.run_dir.iterdir()] == []  # no predictions, scores, config, meta or timings
    expected = _captions(one)
    assert len(set(expected["nucleus"])) > 4 and expected["nucleus"] != expected["nucleus.sample-1"]
    handed = _SecondProcess.handed
    assert [device for _, device in handed] == ["cpu", "cpu"]  # one gather per adapter state
    got = {name: batches for captions, _ in handed for name, batches in captions.items()}
    assert set(got) == set(expected) and len(got) == 5
    for name, batches in got.items():
        assert sorted(batches) == [3, 9, 15]
        assert [c for start in (3, 9, 15) for c in batches[start]] == expected[name][3:6] + expected[name][9:12] + \
            expected[name][15:18], name


def _strip(value: Any) -> Any:
    """scores.json without what records when, how long and where (devices: checked on their own)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()
                if k not in ("environment", "timings", "created", "seconds", "devices")}
    return [_strip(v) for v in value] if isinstance(value, list) else value


def test_two_processes_over_gloo_equal_one_process(one_process, tmp_path: Path) -> None:
    cfg_path, one = one_process
    two = tmp_path / "two"
    (two / "predictions").mkdir(parents=True)
    shutil.copy(one / "predictions" / "zero-shot-beam3.json", two / "predictions")  # finished: read back
    env = dict(os.environ, OMP_NUM_THREADS="1", CAPTUNE_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29553",
           "-m", "captune", "eval", str(cfg_path), "--no-progress", "--adapter", str(one / "adapter"),
           "--set", "name=two", "--set", f"output_dir={tmp_path}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    # process 0 alone reports: one table, one reuse line
    assert res.stdout.count("| system |") == 1 and res.stderr.count("reused finished systems: zero-shot-beam3") == 1
    files = sorted(p.name for p in (one / "predictions").glob("*.json"))
    assert len(files) == 5 and files == sorted(p.name for p in (two / "predictions").glob("*.json"))
    for name in files:
        assert (one / "predictions" / name).read_bytes() == (two / "predictions" / name).read_bytes(), name
    scores = [_strip(json.loads((run / "scores.json").read_text())) for run in (one, two)]
    assert scores[0] == scores[1] and "coco/CIDEr" in scores[1]["systems"]["nucleus"]["metrics"]
    meta = json.loads((two / "grid_meta.json").read_text())
    assert meta["devices"] == {"zero-shot-greedy": "cpu", "nucleus": "cpu", "lora-greedy": "cpu"}
    assert not list((two / "predictions").glob(".*"))  # no temporary files left behind
