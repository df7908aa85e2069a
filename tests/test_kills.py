"""Hard kills and full disks lose nothing: `captune train --resume` ends with the same tensors as an unbroken run.

tests/test_train.py kills forked training at five points; here the kill hits `captune train` run as
a real process (SIGKILL, as the OOM killer or a pre-empted node would), and a checkpoint write fails
as on a full disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captune.cli import main
from train_helpers import colour_dataset

TIMEOUT_S = 300
STEPS, EVERY = 8, 3


def _captune(*args: str | Path, fault: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAPTUNE_FAULT", "CAPTUNE_DEBUG")}
    env.update(OMP_NUM_THREADS="1", CAPTUNE_NO_PROGRESS="1")
    if fault:
        env["CAPTUNE_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "captune", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"captune did not finish within {TIMEOUT_S} s")
    return proc.returncode, err


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _assert_same(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def _logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run_dir / "train" / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> tuple[Path, Path]:
    """A run config (dropout on, so the RNG state must survive too) and the uninterrupted run's folder."""
    root = tmp_path_factory.mktemp("kills")
    data = colour_dataset(root / "colours")
    cfg = root / "run.yaml"
    cfg.write_text(
        f"name: ref\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {data}\ntrain:\n  batch_size: 2\n  lr: 0.003\n  warmup_steps: 1\n  max_steps: {STEPS}\n"
        f"  checkpoint_every: {EVERY}\n  tensorboard: false\n  prompt: ''\n  seed: 3\nlora:\n  dropout: 0.1\n"
    )
    return cfg, root / "runs"


@pytest.fixture(scope="module")
def reference(setup: tuple[Path, Path]) -> Callable[[], dict[str, torch.Tensor]]:
    """The uninterrupted run (in-process, so it can overlap a subprocess), computed on first use."""
    cfg, runs = setup
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get() -> dict[str, torch.Tensor]:
        if "ref" not in cache:
            assert main(["train", str(cfg), "--no-progress"]) == 0
            cache["ref"] = _adapter(runs / "ref")
        return cache["ref"]

    return get


def test_sigkilled_process_resumes_to_identical_adapter(setup: tuple[Path, Path], reference) -> None:
    cfg, runs = setup
    killed = _captune("train", cfg, "--set", "name=killed", "--no-progress", fault="kill@after-step:5")
    ref = reference()  # meanwhile
    code, err = _finish(killed)
    assert code == -9, err[-3000:]  # SIGKILL: no handler, no cleanup ran
    run = runs / "killed"
    assert not (run / "adapter").exists()  # nothing pretends to be finished
    checkpoints = sorted(p.name for p in (run / "train" / "checkpoints").iterdir())
    assert checkpoints == [f"step-{EVERY}"]

    assert main(["train", str(cfg), "--set", "name=killed", "--no-progress", "--resume"]) == 0
    _assert_same(ref, _adapter(run))
    assert _logged_steps(run) == list(range(1, STEPS + 1))


def test_full_disk_keeps_previous_checkpoint_and_resume_is_exact(setup: tuple[Path, Path], reference,
                                                                monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    cfg, runs = setup
    run = runs / "diskfull"
    ckpts = run / "train" / "checkpoints"
    monkeypatch.setenv("CAPTUNE_FAULT", "diskfull@checkpoint:2")
    capsys.readouterr()
    code = main(["train", str(cfg), "--set", "name=diskfull", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(ckpts / f"step-{2 * EVERY}") in err and "previous checkpoint is intact" in err and "--resume" in err
    assert sorted(p.name for p in ckpts.iterdir()) == [f"step-{EVERY}"]  # no half-written step-6, no temp dir
    kept = ckpts / f"step-{EVERY}"
    assert json.loads((kept / "state.json").read_text())["step"] == EVERY
    assert (kept / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run / "adapter").exists()

    monkeypatch.delenv("CAPTUNE_FAULT")
    assert main(["train", str(cfg), "--set", "name=diskfull", "--no-progress", "--resume"]) == 0
    _assert_same(reference(), _adapter(run))
    assert _logged_steps(run) == list(range(1, STEPS + 1))
